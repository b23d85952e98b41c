"""Step records: exactly once per workflow step.

A step's completion is a row of `paybill_steps.records` in the tenant's own database, inserted by the agent's role
in the same transaction as the step's statement (the guard commits both or neither). So a crash can neither lose
a step that committed (its record committed with it) nor let it run twice: a resumed run skips the steps
recorded, and a second attempt at a recorded step cannot commit (the record's primary key refuses it, and the
statement is rolled back with it).

The table belongs to the operator. An agent role may insert records and read back its own (row-level security:
`role` is the inserting role, by default and by check), never change or delete one, and never write another
role's: a record only ever speaks for the role that ran the step.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..ownership import NameConflict

SCHEMA = "paybill_steps"
TABLE = "records"
# Run by the agent's role, in its step's transaction ($1..$5: workflow uid, step index, step name, rows, plan hash).
RECORD = f"INSERT INTO {SCHEMA}.{TABLE} (workflow, step, name, rows, plan_hash) VALUES ($1, $2, $3, $4, $5)"
# Run by the agent's role: its own records of one workflow (row-level security shows no other role's).
RECORDED = f"SELECT step, name, rows, plan_hash FROM {SCHEMA}.{TABLE} WHERE workflow = $1 ORDER BY step"
PRIMARY_KEY = f"{TABLE}_pkey"
AGENT_COLUMNS = ("workflow", "step", "name", "rows", "plan_hash")


@dataclass(frozen=True)
class StepKey:
    """Which step of which run a statement completes: the AgentWorkflow's uid and the step's index."""

    workflow: str
    step: int
    name: str
    plan_hash: str | None = None


@dataclass(frozen=True)
class StepRecord:
    """A step that committed: how many rows it wrote (a mutation) or returned (a query), under which plan hash."""

    step: int
    name: str
    rows: int
    plan_hash: str | None


def prepare(conn: psycopg.Connection, role: str) -> None:
    """Create the records table if it is not there (in the connection's database, as the operator) and let `role`
    record its steps. NameConflict if the schema or the table exists but is not the operator's (a tenant that owns
    its database could have made one first: it is never adopted)."""
    schema, table = sql.Identifier(SCHEMA), sql.SQL("{}.{}").format(sql.Identifier(SCHEMA), sql.Identifier(TABLE))
    if not _exists(conn):
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (role name NOT NULL DEFAULT current_user, workflow text NOT NULL, "
                "step integer NOT NULL, name text NOT NULL, rows bigint NOT NULL, plan_hash text, "
                "at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (role, workflow, step))"
            ).format(table)
        )
        _check_owned(conn)
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(schema))
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(table))
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(table))
        conn.execute(
            sql.SQL(
                "CREATE POLICY own_records ON {} USING (role = current_user) WITH CHECK (role = current_user)"
            ).format(table)
        )
    _check_owned(conn)
    role_id, columns = sql.Identifier(role), sql.SQL(", ").join(map(sql.Identifier, AGENT_COLUMNS))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role_id))
    conn.execute(sql.SQL("GRANT INSERT ({}) ON {} TO {}").format(columns, table, role_id))
    conn.execute(sql.SQL("GRANT SELECT ({}, role) ON {} TO {}").format(columns, table, role_id))


def _exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{TABLE}",)).fetchone()
    return bool(row and row[0])


def _check_owned(conn: psycopg.Connection) -> None:
    row = conn.execute(
        "SELECT n.nspowner = r.oid AND c.relowner = r.oid FROM pg_catalog.pg_namespace n "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = %s "
        "JOIN pg_catalog.pg_roles r ON r.rolname = current_user WHERE n.nspname = %s",
        (TABLE, SCHEMA),
    ).fetchone()
    if row is None or not row[0]:
        raise NameConflict(f"{SCHEMA}.{TABLE} in this database is not Paybill's: workflow steps cannot be recorded")
