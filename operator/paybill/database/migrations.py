"""The tenant application schema, as ordered migrations. Each runs once per schema, in a transaction.

The tables are the same in every isolation model (tenant_id included), so moving a tenant between
pooled, bridge and silo copies rows as they are and compares checksums of identical row text. Every key and
index leads with tenant_id, and every foreign key has an index on its columns (tests/database/
test_pooled_scaling.py checks both), so a tenant's rows are found, copied and deleted in time linear in their
number. Existing schemas get new indexes from the next `migrate` (CREATE INDEX blocks writes to the table
while it builds).
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from .ownership import create_idempotently


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "customers and orders",
        (
            """CREATE TABLE customers (
               tenant_id text NOT NULL,
               id bigint NOT NULL,
               name text NOT NULL,
               email text,
               created_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (tenant_id, id))""",
            """CREATE TABLE orders (
               tenant_id text NOT NULL,
               id bigint NOT NULL,
               customer_id bigint NOT NULL,
               status text NOT NULL,
               total numeric(12, 2) NOT NULL,
               created_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (tenant_id, id),
               FOREIGN KEY (tenant_id, customer_id) REFERENCES customers (tenant_id, id))""",
        ),
    ),
    Migration(2, "orders by status", ("CREATE INDEX orders_by_status ON orders (tenant_id, status)",)),
    # Every foreign key gets an index leading with its columns: deleting a customer checks for its orders, and
    # without one that check reads all of the tenant's orders, once per customer (a pooled tenant's removal
    # grew with the square of its rows: 40k rows, 66 s).
    Migration(3, "orders by customer", ("CREATE INDEX orders_by_customer ON orders (tenant_id, customer_id)",)),
)
LATEST = MIGRATIONS[-1].version
TABLES = ("customers", "orders")  # in foreign-key order: parents first
LEDGER = "paybill_migrations"


def migrate(conn: psycopg.Connection, schema: str) -> int:
    """Bring `schema` to the latest version; returns how many migrations ran. Safe to run concurrently."""
    schema_id, ledger = sql.Identifier(schema), sql.Identifier(schema, LEDGER)

    def create_ledger(conn: psycopg.Connection) -> None:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema_id))
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (version integer PRIMARY KEY, description text "
                "NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            ).format(ledger)
        )
        conn.execute(sql.SQL("REVOKE ALL ON {} FROM PUBLIC").format(ledger))

    create_idempotently(conn, create_ledger)
    ran = 0
    with conn.transaction():
        # Migrators of this schema serialize on its ledger, a table no tenant has any privilege on (an
        # advisory lock would be one a tenant could take too).
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(ledger))
        done = {v for (v,) in conn.execute(sql.SQL("SELECT version FROM {}").format(ledger))}
        conn.execute(sql.SQL("SET LOCAL search_path = {}").format(schema_id))
        for migration in MIGRATIONS:
            if migration.version in done:
                continue
            for statement in migration.statements:
                conn.execute(sql.SQL(statement))  # type: ignore[arg-type]  # static text, no interpolation
            conn.execute(
                sql.SQL("INSERT INTO {} (version, description) VALUES (%s, %s)").format(sql.Identifier(LEDGER)),
                (migration.version, migration.description),
            )
            ran += 1
    return ran


def schema_script(schema: str, conn: psycopg.Connection) -> str:
    """The DDL of the latest schema as a psql script (the head of every backup)."""
    lines = [
        sql.SQL("CREATE SCHEMA IF NOT EXISTS {};").format(sql.Identifier(schema)).as_string(conn),
        sql.SQL("SET search_path = {};").format(sql.Identifier(schema)).as_string(conn),
    ]
    for migration in MIGRATIONS:
        lines += [f"-- migration {migration.version}: {migration.description}"]
        lines += [statement + ";" for statement in migration.statements]
    return "\n".join(lines) + "\n"
