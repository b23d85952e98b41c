"""Pooled deletes and copies stay linear in a tenant's rows (issue 13 item 5): every foreign key of the shared
tables has an index leading with its columns (a delete of a parent row finds its children by index, not by a
scan of the tenant's rows), every table one leading with tenant_id, and removing a large tenant touches no
other tenant's rows. Timing lives in the benchmark (`python -m bench --only scaling`), not here."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

from paybill.api.tenant import Access
from paybill.database import Placement, TenantDatabases
from paybill.database.migrations import LEDGER, TABLES, migrate
from paybill.database.placement import APP_SCHEMA, CONTROL_SCHEMA
from paybill.database.removal import delete_in_batches

from .conftest import fresh

PASSWORD = "tenant-pw"
MODES = ("pooled", "bridge", "silo")


def load(dbs: TenantDatabases, placement: Placement, rows: int) -> None:
    """rows/2 customers and rows/2 orders (one per customer) for `placement`'s tenant, as the operator."""
    schema = psycopg.sql.Identifier(placement.schema)
    with dbs.session(placement.database) as conn, conn.transaction():
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {}.customers (tenant_id, id, name, email) "
                "SELECT %s, g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, %s) g"
            ).format(schema),
            (placement.tenant, rows // 2),
        )
        conn.execute(
            psycopg.sql.SQL(
                "INSERT INTO {}.orders (tenant_id, id, customer_id, status, total) "
                "SELECT %s, g, g, 'open', g %% 1000 FROM generate_series(1, %s) g"
            ).format(schema),
            (placement.tenant, rows // 2),
        )
        conn.execute(psycopg.sql.SQL("ANALYZE {}.customers, {}.orders").format(schema, schema))


def foreign_keys(conn: psycopg.Connection, schemas: list[str]) -> list[tuple[str, str, bool]]:
    """(table, constraint, whether an index of the table leads with exactly the key's columns) per foreign key."""
    return [
        (str(t), str(c), bool(i))
        for t, c, i in conn.execute(
            "SELECT c.conrelid::regclass::text, c.conname, EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = "
            "c.conrelid AND (i.indkey::int2[])[0:cardinality(c.conkey) - 1] @> c.conkey AND "
            "(i.indkey::int2[])[0:cardinality(c.conkey) - 1] <@ c.conkey) FROM pg_constraint c "
            "WHERE c.contype = 'f' AND c.connamespace::regnamespace::text = ANY(%s) ORDER BY 1, 2",
            (schemas,),
        )
    ]


def tables_without_a_tenant_index(conn: psycopg.Connection, schema: str) -> list[str]:
    return [
        str(t)
        for (t,) in conn.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r' "
            "AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = 'tenant_id') "
            "AND NOT EXISTS (SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = i.indkey[0] WHERE i.indrelid = c.oid AND a.attname = 'tenant_id') ORDER BY 1",
            (schema,),
        )
    ]


@pytest.mark.parametrize("mode", MODES)
def test_every_foreign_key_and_every_tenant_table_has_its_index(databases: TenantDatabases, mode: str) -> None:
    placement = databases.provision(fresh("fk"), mode, PASSWORD)
    schemas = [placement.schema, CONTROL_SCHEMA] if placement.pooled else [placement.schema]
    with databases.session(placement.database) as conn:
        keys = foreign_keys(conn, schemas)
        assert keys, "no foreign key found: the query looks in the wrong place"
        assert [k for k in keys if not k[2]] == []
        assert tables_without_a_tenant_index(conn, placement.schema) == []
        found = {
            str(t)
            for (t,) in conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace", (placement.schema,)
            )
        }
        assert set(TABLES) <= found


def plan_of(conn: psycopg.Connection, statement: str, params: tuple[Any, ...]) -> dict[str, Any]:
    (plan,) = conn.execute("EXPLAIN (FORMAT JSON) " + statement, params).fetchone() or (None,)
    return dict((json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"])


def scans(plan: dict[str, Any]) -> list[dict[str, Any]]:
    """Every node of `plan` that reads a table."""
    found = [plan] if "Relation Name" in plan and plan["Node Type"] != "ModifyTable" else []
    for child in plan.get("Plans", []):
        found += scans(child)
    return found


def test_a_pooled_delete_finds_a_tenants_rows_and_each_customers_orders_by_index(databases: TenantDatabases) -> None:
    big = databases.provision(fresh("big"), "pooled", PASSWORD)
    small = databases.provision(fresh("small"), "pooled", PASSWORD)
    load(databases, big, 20_000)
    load(databases, small, 20)
    with databases.session(big.database) as conn:
        for table in TABLES:
            (scan,) = scans(plan_of(conn, f"DELETE FROM {APP_SCHEMA}.{table} WHERE tenant_id = %s", (small.tenant,)))
            assert scan["Node Type"] in ("Index Scan", "Bitmap Heap Scan"), scan
        # What the foreign key runs for each deleted customer (ON DELETE NO ACTION): find its orders.
        (scan,) = scans(
            plan_of(
                conn,
                f"SELECT 1 FROM ONLY {APP_SCHEMA}.orders x WHERE tenant_id = %s AND customer_id = %s "
                "FOR KEY SHARE OF x",
                (big.tenant, 5000),
            )
        )
        condition = scan.get("Index Cond") or scan.get("Recheck Cond") or ""
        assert "customer_id" in condition and "tenant_id" in condition, scan


def test_removing_a_tenant_of_20k_rows_leaves_every_other_tenants_rows(databases: TenantDatabases) -> None:
    leaving = databases.provision(fresh("leaving"), "pooled", PASSWORD)
    staying = [databases.provision(fresh("staying"), "pooled", PASSWORD) for _ in range(2)]
    load(databases, leaving, 20_000)
    for n, placement in enumerate(staying):
        load(databases, placement, 1_000 * (n + 1))
    before = {p.tenant: databases.checksums(p) for p in staying}
    assert databases.checksums(leaving)["orders"].rows == 10_000

    databases.remove(leaving)

    assert all(c.rows == 0 for c in databases.checksums(leaving).values())
    assert {p.tenant: databases.checksums(p) for p in staying} == before
    for placement in staying:  # and each still reads them as itself, through row security
        databases.set_access(placement, Access.READ_ONLY)
        dsn = databases.dsn(placement.database, user=placement.role, password=PASSWORD)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT count(*) FROM orders").fetchone()
            assert rows is not None and rows[0] == before[placement.tenant]["orders"].rows


def test_an_existing_schema_gets_the_foreign_key_index_from_the_next_migration(databases: TenantDatabases) -> None:
    placement = databases.provision(fresh("older"), "bridge", PASSWORD)
    schema = psycopg.sql.Identifier(placement.schema)
    with databases.session(placement.database) as conn:  # as it was before the index existed
        conn.execute(psycopg.sql.SQL("DROP INDEX {}.orders_by_customer").format(schema))
        conn.execute(
            psycopg.sql.SQL("DELETE FROM {}.{} WHERE version = 3").format(schema, psycopg.sql.Identifier(LEDGER))
        )
        assert [k for k in foreign_keys(conn, [placement.schema]) if not k[2]] != []

        assert migrate(conn, placement.schema) == 1

        assert [k for k in foreign_keys(conn, [placement.schema]) if not k[2]] == []


@pytest.mark.parametrize("batch", [1, 2, 3, 1000])
def test_batched_deletes_take_every_key_of_the_tenant_and_no_other(databases: TenantDatabases, batch: int) -> None:
    leaving, staying = (databases.provision(fresh(name), "pooled", PASSWORD) for name in ("batched", "kept"))
    keys = [-(2**63), -5, 0, 1, 2, 7, 2**63 - 1]  # the ends of bigint included
    with databases.session(leaving.database) as conn:
        for placement in (leaving, staying):
            for key in keys:
                conn.execute(
                    "INSERT INTO app.customers (tenant_id, id, name) VALUES (%s, %s, 'c')", (placement.tenant, key)
                )
        kept = databases.checksums(staying)

        assert delete_in_batches(conn, "customers", leaving.tenant, batch) == len(keys)

        assert databases.checksums(leaving)["customers"].rows == 0
        assert databases.checksums(staying) == kept
