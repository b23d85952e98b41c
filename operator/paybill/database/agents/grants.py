"""Defense in depth: the database side of an AgentPolicy, a role per agent with column GRANTs and RLS.

The engine is the first gate; these statements make PostgreSQL refuse the same things on its own, so a
bug in the engine is not a breach. Built with psycopg's sql module only: policy predicates are parsed
and deparsed by pglast before they are embedded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping

from pglast import ast, parse_sql
from pglast.stream import RawStream
from psycopg import Connection, sql

from ...policy.rules import RuleSet
from ...policy.schema import TENANT_COLUMN, Schema, Table
from .. import DDL_LOCK_TIMEOUT, enable_row_security
from ..ownership import agent_name

ACTIONS = ("select", "insert", "update", "delete")
ENABLE_ROW_SECURITY = re.compile(r"^ALTER TABLE (.+) ENABLE ROW LEVEL SECURITY$", re.DOTALL)
DROP_POLICY = re.compile(r'^DROP POLICY IF EXISTS ("(?:[^"]|"")+") ON (.+)$', re.DOTALL)


def agent_role(policy_name: str, tenant: str | None, namespace: str = "", key: bytes = b"") -> str:
    """The opaque login role of the agent of (tenant, namespace, policy): injective (a digest of the exact
    names, never a lossy mapping of them) and naming neither. The operator keys it with its secret."""
    return agent_name(key, tenant or "", namespace, policy_name)


def _where(predicate: str) -> ast.Node:
    """A rowFilter's WHERE expression (the engine has already checked it is one predicate)."""
    stmt = parse_sql(f"SELECT 1 WHERE {predicate}")[0].stmt
    assert isinstance(stmt, ast.SelectStmt) and stmt.whereClause is not None
    return stmt.whereClause


def _predicate(rules: RuleSet, action: str, table: Table, tenant: str | None) -> sql.Composable:
    parts: list[sql.Composable] = []
    if tenant is not None and table.pooled:
        parts.append(sql.SQL("{} = {}").format(sql.Identifier(TENANT_COLUMN), sql.Literal(tenant)))
    filters = rules.row_filters_for(action, table.name)
    if filters:
        canonical = [RawStream()(_where(f)) for f in filters]
        parts.append(sql.SQL("({})").format(sql.SQL(" OR ").join(sql.SQL(f"({c})") for c in canonical)))
    return sql.SQL(" AND ").join(parts) if parts else sql.SQL("true")


def grant_statements(rules: RuleSet, schema: Schema, role: str, tenant: str | None) -> list[sql.Composed]:
    """Statements that make `role` hold exactly what the policy allows (run by the schema owner)."""
    role_id, schema_id = sql.Identifier(role), sql.Identifier(schema.name)
    statements: list[sql.Composed] = [
        sql.SQL("REVOKE ALL ON ALL TABLES IN SCHEMA {} FROM {}").format(schema_id, role_id),
        sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema_id, role_id),
    ]
    for table in schema.tables.values():
        table_id = sql.SQL("{}.{}").format(schema_id, sql.Identifier(table.name))
        granted: dict[str, list[str]] = {}
        for action in ("select", "insert", "update"):
            granted[action] = [c for c in table.columns if _allowed(rules, action, table, c)]
        delete = _allowed(rules, "delete", table, None)
        if not any(granted.values()) and not delete:
            continue
        # Columns Paybill's own predicates read (tenant column, row filters) and the tenant column it writes.
        helpers = rules.predicate_columns(table.name, table.columns, table.pooled, tenant)
        granted["select"] = [c for c in table.columns if c in granted["select"] or c in helpers]
        if granted["insert"] and tenant is not None and table.pooled and TENANT_COLUMN not in granted["insert"]:
            granted["insert"].append(TENANT_COLUMN)
        for action, columns in granted.items():
            if columns:
                statements.append(
                    sql.SQL("GRANT {} ({}) ON {} TO {}").format(
                        sql.SQL(action.upper()), sql.SQL(", ").join(map(sql.Identifier, columns)), table_id, role_id
                    )
                )
        if delete:
            statements.append(sql.SQL("GRANT DELETE ON {} TO {}").format(table_id, role_id))
        statements.append(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table_id))
        for action in ACTIONS:
            if not (delete if action == "delete" else granted[action]):
                continue
            name = sql.Identifier(_policy_name(role, action))
            predicate = _predicate(rules, action, table, tenant)
            statements.append(sql.SQL("DROP POLICY IF EXISTS {} ON {}").format(name, table_id))
            clause = {"insert": "WITH CHECK ({4})", "update": "USING ({4}) WITH CHECK ({4})"}.get(action, "USING ({4})")
            statements.append(
                sql.SQL("CREATE POLICY {0} ON {1} AS PERMISSIVE FOR {2} TO {3} " + clause).format(
                    name, table_id, sql.SQL(action.upper()), role_id, predicate
                )
            )
    return statements


def _allowed(rules: RuleSet, action: str, table: Table, column: str | None) -> bool:
    match = rules.match(action, table.name, column)
    if match.deny is not None or not match.allows:
        return False
    return column != TENANT_COLUMN or action == "select" or not table.pooled


def _policy_name(role: str, action: str) -> str:
    name = f"paybill_{role}_{action}"
    return name if len(name) <= 63 else f"paybill_{hashlib.sha256(name.encode()).hexdigest()[:40]}_{action}"


def apply_grants(
    conn: Connection,
    rules: RuleSet,
    schema: Schema,
    role: str,
    tenant: str | None,
    password: str | None = None,
    installed: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create or update the agent role and its privileges in one transaction; safe to re-run.

    Row security DDL takes an ACCESS EXCLUSIVE lock that queues behind every reader of a shared table and
    queues every later one: it runs only when something changed (RLS not yet on; a policy whose statement
    differs from the one `installed` records, or that is gone), and waits at most DDL_LOCK_TIMEOUT (then
    psycopg.errors.LockNotAvailable: retry later). Returns the digest of each policy statement now in place,
    keyed by its DROP statement, for the next call's `installed`."""
    role_id = sql.Identifier(role)
    in_place: dict[str, str] = {}
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(
                sql.SQL("CREATE ROLE {} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOBYPASSRLS").format(role_id)
            )
        login = sql.SQL("LOGIN PASSWORD {}").format(sql.Literal(password)) if password else sql.SQL("NOLOGIN")
        conn.execute(sql.SQL("ALTER ROLE {} ").format(role_id) + login)
        conn.execute(
            sql.SQL("ALTER ROLE {} SET statement_timeout = {}").format(
                role_id, sql.Literal(rules.limits.statementTimeoutMs)
            )
        )
        drop: str | None = None
        for statement in (s.as_string(conn) for s in grant_statements(rules, schema, role, tenant)):
            if (enable := ENABLE_ROW_SECURITY.match(statement)) is not None:
                enable_row_security(conn, sql.SQL(enable.group(1)))  # type: ignore[arg-type]
            elif statement.startswith("DROP POLICY "):
                drop = statement
            elif statement.startswith("CREATE POLICY ") and drop is not None:
                digest = hashlib.sha256(statement.encode()).hexdigest()
                if (installed or {}).get(drop) != digest or not _policy_exists(conn, drop):
                    conn.execute(drop.encode())
                    conn.execute(statement.encode())
                in_place[drop], drop = digest, None
            else:
                conn.execute(statement.encode())
        grant_sequences(conn, rules, schema, role)
    return in_place


def grant_sequences(conn: Connection, rules: RuleSet, schema: Schema, role: str) -> None:
    """USAGE on the sequences behind `serial` columns of the tables `role` may insert into (their default calls
    nextval, which needs it; identity columns need nothing), and on no other sequence of the schema."""
    schema_id = sql.Identifier(schema.name)
    conn.execute(sql.SQL("REVOKE ALL ON ALL SEQUENCES IN SCHEMA {} FROM {}").format(schema_id, sql.Identifier(role)))
    inserting = [
        table.name
        for table in schema.tables.values()
        if any(_allowed(rules, "insert", table, column) for column in table.columns)
    ]
    if not inserting:
        return
    owned = conn.execute(
        "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid"
        " JOIN pg_class t ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid"
        " WHERE s.relkind = 'S' AND d.deptype = 'a'"
        " AND t.relnamespace = (SELECT oid FROM pg_namespace WHERE nspname = %s)"
        " AND s.relnamespace = t.relnamespace AND t.relname = ANY(%s)",
        (schema.name, inserting),
    ).fetchall()
    for (sequence,) in owned:
        conn.execute(
            sql.SQL("GRANT USAGE ON SEQUENCE {}.{} TO {}").format(
                schema_id, sql.Identifier(sequence), sql.Identifier(role)
            )
        )


def _policy_exists(conn: Connection, drop: str) -> bool:
    """Whether the policy a `DROP POLICY IF EXISTS "name" ON table` statement names exists."""
    found = DROP_POLICY.match(drop)
    assert found is not None, drop
    name = found.group(1)[1:-1].replace('""', '"')
    return (
        conn.execute(
            "SELECT 1 FROM pg_policy WHERE polrelid = %s::regclass AND polname = %s", (found.group(2), name)
        ).fetchone()
        is not None
    )
