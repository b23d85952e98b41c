"""Claiming names on the server: a role, database or schema is created for its owner and recorded in the same
step, or found and checked against that record. One that exists without the record, or under another OID, was
not created by Paybill and is never adopted (`ownership.decide` says which)."""

from __future__ import annotations

import psycopg
from psycopg import errors, sql

from ..api.plan import Isolation
from .connections import Connections
from .control import Control
from .ownership import Found, NameConflict, Verdict, decide, tenant_identity
from .placement import Placement


class Claims:
    def __init__(self, connections: Connections, control: Control) -> None:
        self.connections = connections
        self.control = control

    def claim_role(self, role: str, owner: str, attributes: str) -> None:
        """Create `role` for `owner` (recorded in the same transaction), or check it is the one we created.
        Raises NameConflict for a role Paybill did not create."""
        with self.connections.session() as conn:
            self.control.prepare(conn)
            with conn.transaction():
                found = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                verdict = decide(
                    "role",
                    role,
                    owner,
                    self.control.record(conn, "role", role),
                    Found(int(found[0])) if found else None,
                )
                if verdict == Verdict.CREATE:
                    conn.execute(sql.SQL("CREATE ROLE {} " + attributes).format(sql.Identifier(role)))
                    oid = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
                    self.control.remember(conn, "role", role, owner, int(oid[0]) if oid else None)

    def owns_role(self, role: str, owner: str) -> bool:
        """True when `role` exists and is the one Paybill created for `owner`."""
        with self.connections.session() as conn:
            self.control.prepare(conn)
            found = conn.execute("SELECT oid FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            if found is None:
                return False
            try:
                return (
                    decide("role", role, owner, self.control.record(conn, "role", role), Found(int(found[0])))
                    == Verdict.USE
                )
            except NameConflict:
                return False

    def claim_database(self, database: str, owner: str) -> None:
        with self.connections.session() as conn:
            self.control.prepare(conn)
            found = conn.execute(
                "SELECT oid, datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
                "FROM pg_database WHERE datname = %s",
                (database,),
            ).fetchone()
            verdict = decide(
                "database",
                database,
                owner,
                self.control.record(conn, "database", database),
                Found(int(found[0]), bool(found[1])) if found else None,
            )
            if verdict == Verdict.CREATE:
                self.control.remember(conn, "database", database, owner, None)  # claimed first: CREATE DATABASE
                try:  # is no transaction
                    conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
                except (errors.DuplicateDatabase, errors.UniqueViolation):
                    return self.claim_database(database, owner)  # another reconcile of ours won the race
            if verdict != Verdict.USE:
                # until its oid is recorded (a crash after CREATE DATABASE included): no one else may connect
                conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database)))
                oid = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (database,)).fetchone()
                self.control.remember(conn, "database", database, owner, int(oid[0]) if oid else None)

    def owns_database(self, placement: Placement) -> bool:
        with self.connections.session() as conn:
            self.control.prepare(conn)
            found = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (placement.database,)).fetchone()
            if found is None:
                return False
            return (
                decide(
                    "database",
                    placement.database,
                    tenant_identity(placement.tenant),
                    self.control.record(conn, "database", placement.database),
                    Found(int(found[0])),
                )
                == Verdict.USE
            )

    def holds_data(self, placement: Placement) -> bool:
        """True when the tenant's data is at `placement`: its silo database or bridge schema exists and is the one
        Paybill created for it, or (pooled) its role is mapped to it in the pooled database."""
        if placement.isolation == Isolation.SILO:
            try:
                return self.owns_database(placement)
            except NameConflict:
                return False
        if not self.database_exists(placement.database):
            return False
        with self.connections.session(placement.database) as conn:
            if placement.isolation == Isolation.BRIDGE:
                return self.owns_schema(conn, placement)
            if conn.execute("SELECT to_regclass('paybill.tenant_roles')").fetchone() == (None,):
                return False
            mapped = conn.execute(
                "SELECT 1 FROM paybill.tenant_roles WHERE role = %s AND tenant = %s", (placement.role, placement.tenant)
            ).fetchone()
        return mapped is not None

    def database_exists(self, database: str) -> bool:
        with self.connections.session() as conn:
            return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is not None

    def claim_schema(self, conn: psycopg.Connection, database: str, schema: str, owner: str) -> None:
        """Like `claim_database`, for a schema in `database` (conn is connected to it)."""
        found = conn.execute(
            "SELECT oid, nspowner = (SELECT oid FROM pg_roles WHERE rolname = current_user) "
            "FROM pg_namespace WHERE nspname = %s",
            (schema,),
        ).fetchone()
        with self.connections.session() as control:
            self.control.prepare(control)
            verdict = decide(
                "schema",
                schema,
                owner,
                self.control.record(control, "schema", schema, database),
                Found(int(found[0]), bool(found[1])) if found else None,
            )
            if verdict == Verdict.CREATE:
                self.control.remember(control, "schema", schema, owner, None, database)
                conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            if verdict != Verdict.USE:
                oid = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone()
                self.control.remember(control, "schema", schema, owner, int(oid[0]) if oid else None, database)

    def owns_schema(self, conn: psycopg.Connection, placement: Placement) -> bool:
        """True when the placement's schema exists and is the one Paybill created for its tenant."""
        found = conn.execute("SELECT oid FROM pg_namespace WHERE nspname = %s", (placement.schema,)).fetchone()
        if found is None:
            return False
        with self.connections.session() as control:
            self.control.prepare(control)
            record = self.control.record(control, "schema", placement.schema, placement.database)
        try:
            return (
                decide("schema", placement.schema, tenant_identity(placement.tenant), record, Found(int(found[0])))
                == Verdict.USE
            )
        except NameConflict:
            return False
