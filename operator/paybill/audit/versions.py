"""Policy versions kept by content, so that a recorded gate decision can be made again long after its AgentPolicy
changed or was deleted (audit/replay.py).

A version is the policy as the engine applied it (after the tenant's access was taken into account) and the tenant
schema it was checked against, as one canonical JSON text; its address is the SHA-256 of that text. Each is stored
once, in the audit log's database (`paybill.policy_versions`), and every workflow step's audit record names the
address it ran under. A stored text that no longer hashes to its address was edited: replay says so.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ..api.agentpolicy import AgentPolicySpec
from ..database.ownership import create_idempotently
from ..policy.engine import PolicyEngine
from ..policy.schema import Key, KeyKind, Schema, Table, TypeFamily


@dataclass(frozen=True)
class StoredVersion:
    address: str
    content: str

    @property
    def intact(self) -> bool:
        """The content still hashes to the address it was stored under."""
        return address_of(self.content) == self.address

    def engine(self) -> PolicyEngine:
        """The engine this version describes (PolicyError/SchemaError/ValueError if the content is not one)."""
        body = json.loads(self.content)
        return PolicyEngine(AgentPolicySpec.model_validate(body["policy"]), schema_from_json(body["schema"]))


def content_of(spec: AgentPolicySpec, schema: Schema) -> str:
    """The canonical text of (policy, schema): equal inputs give byte-identical text."""
    body = {"policy": spec.model_dump(mode="json"), "schema": schema_to_json(schema)}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def address_of(content: str) -> str:
    return hashlib.sha256(content.encode()).hexdigest()


class PolicyVersions:
    """The content-addressed store, in the operator's database (only the operator can reach it)."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._ready = False

    def store(self, spec: AgentPolicySpec, schema: Schema) -> str:
        """Keep the version (once) and return its address."""
        content = content_of(spec, schema)
        address = address_of(content)
        conn = self._connection()
        conn.execute(
            "INSERT INTO paybill.policy_versions (address, content) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (address, content),
        )
        return address

    def load(self, address: str) -> StoredVersion | None:
        return load_version(self._connection(), address)

    def _connection(self) -> psycopg.Connection:
        conn = self._connect()
        # DDL only when the store is missing: concurrent REVOKEs fail ("tuple concurrently updated")
        if not self._ready:
            if not _store_exists(conn):
                try:
                    create_idempotently(conn, _create_store)
                except psycopg.errors.InternalError_:
                    if not _store_exists(conn):  # not that race, then
                        raise
            self._ready = True
        return conn


def load_version(conn: psycopg.Connection, address: str) -> StoredVersion | None:
    """The version stored under `address`; None if there is none (or no store at all: nothing is created)."""
    if not _store_exists(conn):
        return None
    row = conn.execute("SELECT content FROM paybill.policy_versions WHERE address = %s", (address,)).fetchone()
    return StoredVersion(address, row[0]) if row else None


def _store_exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass('paybill.policy_versions') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _create_store(conn: psycopg.Connection) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS paybill")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.policy_versions (address text PRIMARY KEY, content text NOT NULL, "
        "stored timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("REVOKE ALL ON paybill.policy_versions FROM PUBLIC")


def schema_to_json(schema: Schema) -> dict[str, Any]:
    return {
        "name": schema.name,
        "tables": [
            {
                "name": table.name,
                "columns": [[column, family.value] for column, family in table.columns.items()],
                "keys": [_key_to_json(key) for key in table.keys],
            }
            for table in schema.tables.values()
        ],
        "inbound": [_key_to_json(key) for key in schema.inbound],
    }


def schema_from_json(data: dict[str, Any]) -> Schema:
    tables = {
        table["name"]: Table(
            table["name"],
            {column: TypeFamily(family) for column, family in table["columns"]},
            tuple(_key_from_json(key) for key in table["keys"]),
        )
        for table in data["tables"]
    }
    return Schema(data["name"], tables, tuple(_key_from_json(key) for key in data["inbound"]))


def _key_to_json(key: Key) -> dict[str, Any]:
    return {
        "kind": key.kind.value,
        "table": key.table,
        "columns": list(key.columns),
        "involves": sorted(key.involves),
        "name": key.name,
        "references": key.references,
        "referenced": list(key.referenced),
        "onUpdate": key.on_update,
        "onDelete": key.on_delete,
    }


def _key_from_json(data: dict[str, Any]) -> Key:
    return Key(
        KeyKind(data["kind"]),
        data["table"],
        tuple(data["columns"]),
        frozenset(data["involves"]),
        data["name"],
        data["references"],
        tuple(data["referenced"]),
        data["onUpdate"],
        data["onDelete"],
    )
