"""Step records: exactly once per workflow step.

A step's completion is a row of `paybill_steps.records` in the tenant's own database, inserted by the agent's role
in the same transaction as the step's statement (the guard commits both or neither). So a crash can neither lose
a step that committed (its record committed with it) nor let it run twice: a resumed run skips the steps
recorded, and a second attempt at a recorded step cannot commit (the record's primary key refuses it, and the
statement is rolled back with it).

The table belongs to the operator. An agent role may insert records and read back its own (row-level security:
`role` is the inserting role, by default and by check), never change or delete one, and never write another
role's: a record only ever speaks for the role that ran the step.

Records go where the tenant's data goes: a move copies the records of the tenant's agents (`carry`; agent roles
keep their names across placements), so a run interrupted before a move and taken up after it still skips what it
did. In a shared database other tenants' agents record beside them: only the named roles' rows are carried.
"""

from __future__ import annotations

from collections.abc import Sequence
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
CARRIED_COLUMNS = ("role", *AGENT_COLUMNS, "at")


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
    ensure_table(conn)
    schema, table = sql.Identifier(SCHEMA), sql.Identifier(SCHEMA, TABLE)
    role_id, columns = sql.Identifier(role), sql.SQL(", ").join(map(sql.Identifier, AGENT_COLUMNS))
    conn.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(schema, role_id))
    conn.execute(sql.SQL("GRANT INSERT ({}) ON {} TO {}").format(columns, table, role_id))
    conn.execute(sql.SQL("GRANT SELECT ({}, role) ON {} TO {}").format(columns, table, role_id))


def carry(source: psycopg.Connection, target: psycopg.Connection, roles: Sequence[str]) -> int:
    """Copy the records of `roles` (one tenant's agents) from `source`'s database to `target`'s, both connected as
    the operator; returns how many the source holds. Records already at the target stay (each says a step
    committed: a tenant moving back finds its earlier copy), and the rows of every other role stay where they are.
    Nothing is read from a source table that is not the operator's (no agent could record there: `prepare`
    refuses it); NameConflict for such a table at the target, which its owner could empty."""
    if not roles or not _exists(source) or not _owned(source):
        return 0
    table, columns = sql.Identifier(SCHEMA, TABLE), sql.SQL(", ").join(map(sql.Identifier, CARRIED_COLUMNS))
    select = sql.SQL("SELECT {} FROM {} WHERE role = ANY({}::name[])").format(columns, table, sql.Literal(list(roles)))
    with target.transaction():
        ensure_table(target)
        target.execute(
            sql.SQL("CREATE TEMPORARY TABLE carried ON COMMIT DROP AS SELECT {} FROM {} LIMIT 0").format(columns, table)
        )
        copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
        with (
            source.cursor().copy(copy_out) as reader,
            target.cursor().copy("COPY pg_temp.carried FROM STDIN (FORMAT binary)") as writer,
        ):
            for chunk in reader:
                writer.write(chunk)
        row = target.execute("SELECT count(*) FROM pg_temp.carried").fetchone()
        target.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM pg_temp.carried ON CONFLICT DO NOTHING").format(
                table, columns, columns
            )
        )
    return int(row[0]) if row else 0


def ensure_table(conn: psycopg.Connection) -> None:
    """The records table with its row-level security, made if missing; NameConflict if it is not the operator's."""
    schema, table = sql.Identifier(SCHEMA), sql.Identifier(SCHEMA, TABLE)
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


def _exists(conn: psycopg.Connection) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{TABLE}",)).fetchone()
    return bool(row and row[0])


def _check_owned(conn: psycopg.Connection) -> None:
    if not _owned(conn):
        raise NameConflict(f"{SCHEMA}.{TABLE} in this database is not Paybill's: workflow steps cannot be recorded")


def _owned(conn: psycopg.Connection) -> bool:
    """The schema and the table are both the connected role's (the operator's)."""
    row = conn.execute(
        "SELECT n.nspowner = r.oid AND c.relowner = r.oid FROM pg_catalog.pg_namespace n "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = %s "
        "JOIN pg_catalog.pg_roles r ON r.rolname = current_user WHERE n.nspname = %s",
        (TABLE, SCHEMA),
    ).fetchone()
    return bool(row and row[0])
