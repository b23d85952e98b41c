"""Offboarding and migration time against rows per tenant (issue 13 item 5): both must grow linearly.

One PostgreSQL server (durable, as the operator's), `TenantDatabases` called directly (no API server, no
operator): neighbours' rows stay in the pooled tables throughout, as in production. Per size, one pooled
tenant is loaded with half its rows in customers and half in orders (each order referencing a customer), then
- offboarding: `backup` (COPY as the tenant's role, under row security) and `remove` (the pooled DELETEs);
- migration: another tenant of the same size, `migrate` pooled -> silo (copy, checksums, cut-over), then
  `finish_move` (removing the pooled source).

`python -m bench.scaling --sizes 10000,40000` prints the table alone (e.g. to measure a tree before a change).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from paybill.database import TenantDatabases
from paybill.database.placement import Placement
from paybill.database.server import LocalPostgres

SIZES = (10_000, 40_000, 160_000, 640_000, 1_000_000)
QUICK_SIZES = (10_000, 40_000)
NEIGHBOURS = 3  # other pooled tenants, each with NEIGHBOUR_ROWS rows
NEIGHBOUR_ROWS = 20_000
PASSWORD = "bench-scaling"


def load(databases: TenantDatabases, placement: Placement, rows: int) -> None:
    """`rows` rows of `placement`'s (pooled) tenant: rows/2 customers and rows/2 orders, one per customer."""
    half = rows // 2
    with databases.session(placement.database) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO app.customers (tenant_id, id, name, email) "
            "SELECT %s, g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, %s) g",
            (placement.tenant, half),
        )
        conn.execute(
            "INSERT INTO app.orders (tenant_id, id, customer_id, status, total) "
            "SELECT %s, g, g, CASE WHEN g %% 3 = 0 THEN 'paid' ELSE 'open' END, g %% 1000 "
            "FROM generate_series(1, %s) g",
            (placement.tenant, half),
        )
    with databases.session(placement.database) as conn:
        conn.execute("ANALYZE app.customers")
        conn.execute("ANALYZE app.orders")


def seconds(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def measure(databases: TenantDatabases, rows: int) -> dict[str, float]:
    leaving = f"leaving-{rows}"
    placement = databases.provision(leaving, "pooled", PASSWORD)
    load(databases, placement, rows)
    backup = seconds(lambda: databases.backup(placement, leaving))
    remove = seconds(lambda: databases.remove(placement))
    databases.drop_role(leaving)
    databases.forget(leaving)

    moving = f"moving-{rows}"
    placement = databases.provision(moving, "pooled", PASSWORD)
    load(databases, placement, rows)
    migrate = seconds(lambda: databases.migrate(moving, "silo", PASSWORD))
    cleanup = seconds(lambda: databases.finish_move(moving))
    databases.remove(databases.placement_for(moving, "silo"))
    databases.drop_role(moving)
    databases.forget(moving)
    return {"rows": rows, "backup_s": backup, "remove_s": remove, "migrate_s": migrate, "cleanup_s": cleanup}


def scaling(sizes: tuple[int, ...]) -> list[dict[str, float]]:
    directory = Path(tempfile.mkdtemp(prefix="paybill-bench-scaling-"))
    os.chmod(directory, 0o755)
    server = LocalPostgres(directory / "postgres")
    server.start()
    databases = TenantDatabases(server.dsn, backup_dir=directory / "backups")
    try:
        for n in range(NEIGHBOURS):
            neighbour = databases.provision(f"neighbour-{n}", "pooled", PASSWORD)
            load(databases, neighbour, NEIGHBOUR_ROWS)
        return [measure(databases, rows) for rows in sizes]
    finally:
        databases.close()
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def table(results: list[dict[str, float]]) -> list[str]:
    lines = [
        "| rows per tenant | backup | remove | remove µs/row | migrate pooled → silo | cleanup of the source "
        "| migration µs/row |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        moved = r["migrate_s"] + r["cleanup_s"]
        lines.append(
            f"| {r['rows']:,.0f} | {r['backup_s']:.2f} s | {r['remove_s']:.2f} s "
            f"| {1e6 * r['remove_s'] / r['rows']:.1f} | {r['migrate_s']:.2f} s | {r['cleanup_s']:.2f} s "
            f"| {1e6 * moved / r['rows']:.1f} |"
        )
    return lines


def run(quick: bool = False) -> str:
    from .__main__ import machine  # imported here: __main__ imports this module

    load_before = os.getloadavg()[0]
    results = scaling(QUICK_SIZES if quick else SIZES)
    load_after = os.getloadavg()[0]
    return "\n".join(
        [
            "## Pooled tenant offboarding and migration against rows per tenant (issue 13 item 5)",
            "",
            f"`TenantDatabases` on a local durable PostgreSQL, {NEIGHBOURS} neighbour tenants of "
            f"{NEIGHBOUR_ROWS:,} rows each in the pooled tables",
            "throughout. A tenant's rows: half customers, half orders (one per customer). Offboarding = `backup` "
            "(COPY as the tenant's role,",
            "under row security) then `remove` (the pooled DELETEs); migration = `migrate` pooled → silo (copy, "
            "checksums, cut-over)",
            "then `finish_move` (the pooled source removed), on a second tenant of the same size. Linear growth shows "
            "as a constant µs/row",
            "(migration µs/row counts both of its steps).",
            f"Machine: {machine()}. Command: `python -m bench --only scaling{' --quick' if quick else ''}`. Load",
            f"average (1 min) when this group began and ended: {load_before:.1f} and {load_after:.1f}.",
            "",
            *table(results),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="rows per tenant, comma-separated")
    args = parser.parse_args()
    print("\n".join(table(scaling(tuple(int(s) for s in args.sizes.split(","))))))


if __name__ == "__main__":
    main()
