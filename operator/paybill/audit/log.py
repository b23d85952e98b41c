"""A hash-chained audit log in PostgreSQL: each record's hash covers its content and the previous hash,
so editing, dropping or reordering any record breaks the chain from there on (`verify` says where)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from ..database.ownership import create_idempotently

GENESIS = "0" * 64


class ChainBroken(RuntimeError):
    def __init__(self, seq: int, message: str) -> None:
        super().__init__(f"audit record {seq}: {message}")
        self.seq = seq


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    kind: str
    name: str
    event: str
    details: dict[str, Any]
    previous: str
    hash: str


def record_hash(previous: str, kind: str, name: str, event: str, details: dict[str, Any]) -> str:
    content = json.dumps(
        {"kind": kind, "name": name, "event": event, "details": details},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{previous}\n{content}".encode()).hexdigest()


class AuditLog:
    """Appends under a lock on the log table itself (only the operator can take it: no tenant may even
    connect to its database), so concurrent writers still form one chain."""

    def __init__(self, connect: Callable[[], psycopg.Connection]) -> None:
        self._connect = connect
        self._ready = False

    def _setup(self, conn: psycopg.Connection) -> None:
        if self._ready:
            return
        create_idempotently(conn, _create_log)
        self._ready = True

    def append(self, kind: str, name: str, event: str, details: dict[str, Any]) -> AuditRecord:
        conn = self._connect()
        self._setup(conn)
        with conn.transaction():
            conn.execute("LOCK TABLE paybill.audit_log IN SHARE ROW EXCLUSIVE MODE")  # appenders wait, readers not
            last = conn.execute("SELECT seq, hash FROM paybill.audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            seq, previous = (last[0] + 1, last[1]) if last else (1, GENESIS)
            details = json.loads(json.dumps(details, default=str))
            digest = record_hash(previous, kind, name, event, details)
            conn.execute(
                "INSERT INTO paybill.audit_log (seq, kind, name, event, details, previous, hash) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (seq, kind, name, event, json.dumps(details), previous, digest),
            )
        return AuditRecord(seq, kind, name, event, details, previous, digest)

    def records(self, kind: str | None = None, name: str | None = None) -> list[AuditRecord]:
        conn = self._connect()
        self._setup(conn)
        rows = conn.execute(
            "SELECT seq, kind, name, event, details, previous, hash FROM paybill.audit_log "
            "WHERE (%s::text IS NULL OR kind = %s) AND (%s::text IS NULL OR name = %s) ORDER BY seq",
            (kind, kind, name, name),
        ).fetchall()
        return [AuditRecord(*row) for row in rows]

    def verify(self) -> int:
        """Walk the whole chain; returns its length or raises ChainBroken at the first bad record."""
        previous, count = GENESIS, 0
        for record in self.records():
            count += 1
            if record.seq != count:
                raise ChainBroken(record.seq, f"expected sequence number {count}")
            if record.previous != previous:
                raise ChainBroken(record.seq, "does not follow the previous record")
            if record_hash(previous, record.kind, record.name, record.event, record.details) != record.hash:
                raise ChainBroken(record.seq, "content does not match its hash")
            previous = record.hash
        return count


def _create_log(conn: psycopg.Connection) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS paybill")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.audit_log (seq bigint PRIMARY KEY, "
        "at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, name text NOT NULL, "
        "event text NOT NULL, details jsonb NOT NULL, previous text NOT NULL, hash text NOT NULL)"
    )
    conn.execute("REVOKE ALL ON paybill.audit_log FROM PUBLIC")
