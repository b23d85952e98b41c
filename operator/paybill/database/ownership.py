"""Names and ownership of what Paybill creates in PostgreSQL.

Role, schema and database names are opaque and injective: `t_<hmac>` for a tenant, `a_<hmac>` for an agent,
an HMAC-SHA256 (keyed with a secret kept in the operator's own database) of the exact identity of the
Kubernetes object. No tenant or policy name appears in a catalog a tenant can read, and no two objects
share a name. The human mapping is the `paybill.owned` table in the operator's database (and Kubernetes
status).

Every role, schema and database is recorded in `paybill.owned` with its owner and OID when it is created;
one that exists without a record, or under another OID, was not created by Paybill and is never adopted.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import errors

DIGEST_HEX = 24  # 96 bits: collisions are out of reach, and the name stays short
TENANT_PREFIX = "t_"
AGENT_PREFIX = "a_"
CREATE_RACES = (errors.UniqueViolation, errors.DuplicateObject, errors.DuplicateTable, errors.DuplicateSchema)


class NameConflict(RuntimeError):
    """A role, schema or database with Paybill's name for an object exists but is not that object's."""


def opaque_name(key: bytes, prefix: str, *identity: str) -> str:
    """`prefix` + a keyed digest of the identity parts (JSON-encoded, so ('a-b', 'c') and ('a', 'b-c') differ)."""
    message = json.dumps(identity, separators=(",", ":")).encode()
    return prefix + hmac.new(key, message, hashlib.sha256).hexdigest()[:DIGEST_HEX]


def tenant_name(key: bytes, tenant: str) -> str:
    """The tenant's role (also its bridge schema and its silo database)."""
    return opaque_name(key, TENANT_PREFIX, "tenant", tenant)


def agent_name(key: bytes, tenant: str, namespace: str, policy: str) -> str:
    """The login role of the agent of AgentPolicy namespace/policy on `tenant`."""
    return opaque_name(key, AGENT_PREFIX, "agent", tenant, namespace, policy)


def tenant_identity(tenant: str) -> str:
    return f"Tenant {tenant}"


def agent_identity(tenant: str, namespace: str, policy: str) -> str:
    return f"AgentPolicy {namespace}/{policy} of tenant {tenant}"


@dataclass(frozen=True)
class Record:
    """A row of paybill.owned: who the object is for, and its OID once created."""

    owner: str
    oid: int | None


@dataclass(frozen=True)
class Found:
    """An object that exists: its OID, and whether the operator's role owns it (databases and schemas)."""

    oid: int
    owned_by_operator: bool = False


class Verdict(enum.Enum):
    CREATE = "create"  # nothing there: create it (and record the OID)
    USE = "use"  # there, and it is the one we recorded
    RECORD = "record"  # there, created by us just before a crash: record its OID


def decide(kind: str, name: str, owner: str, record: Record | None, found: Found | None) -> Verdict:
    """What to do with `kind` `name` for `owner`. Raises NameConflict for anything Paybill did not create."""
    if record is not None and record.owner != owner:
        raise NameConflict(f"{kind} {name} is Paybill's for another object; refusing to share it")
    if found is None:
        return Verdict.CREATE
    if record is None:
        raise NameConflict(f"{kind} {name} exists and was not created by Paybill; refusing to adopt it")
    if record.oid == found.oid:
        return Verdict.USE
    if record.oid is None and found.owned_by_operator:
        return Verdict.RECORD
    raise NameConflict(
        f"{kind} {name} exists and was not created by Paybill (it was re-created by someone else); refusing to adopt it"
    )


def create_idempotently(conn: psycopg.Connection, setup: Callable[[psycopg.Connection], None]) -> None:
    """Run `setup` (CREATE ... IF NOT EXISTS statements) in a transaction, again if a concurrent creator won a
    race. No lock is taken: a lock a tenant could also take would let a tenant stall the operator."""
    for attempt in range(5):
        try:
            with conn.transaction():
                setup(conn)
            return
        except CREATE_RACES:
            if attempt == 4:
                raise
            time.sleep(0.05 * (attempt + 1))
