"""An apply that never finished, as PostgreSQL remembers it: a row in `paybill_terraform.applying` is written before
every `terraform apply` and removed once the command has returned (succeeded or failed: either way Terraform wrote
its state). A row found when a run starts means an apply was killed (the operator, its node, the run's timeout)
and what it made since its last state write is in the cloud but not in the state: terraform/adoption.py decides what
to adopt, from what the state holds (read here) and what the cloud adapter finds."""

from __future__ import annotations

import datetime
import json

import psycopg
from psycopg import sql

from .adoption import Key
from .backend import schema_for, state_table_exists
from .plans import SCHEMA


def mark_applying(connection: psycopg.Connection, tenant_id: str, workspace: str, run_id: str) -> None:
    connection.execute(
        f"""INSERT INTO {SCHEMA}.applying (tenant_id, workspace, run_id) VALUES (%s, %s, %s)
            ON CONFLICT (tenant_id, workspace) DO UPDATE SET run_id = excluded.run_id""",
        [tenant_id, workspace, run_id],
    )


def clear_applying(connection: psycopg.Connection, tenant_id: str, workspace: str) -> None:
    connection.execute(f"DELETE FROM {SCHEMA}.applying WHERE tenant_id = %s AND workspace = %s", [tenant_id, workspace])


def interrupted_since(connection: psycopg.Connection, tenant_id: str, workspace: str) -> datetime.datetime | None:
    """When the first apply that never finished started (None: every apply of this workspace finished)."""
    row = connection.execute(
        f"SELECT started_at FROM {SCHEMA}.applying WHERE tenant_id = %s AND workspace = %s", [tenant_id, workspace]
    ).fetchone()
    return row[0] if row else None


def plan_made_at(connection: psycopg.Connection, tenant_id: str, plan_hash: str) -> datetime.datetime | None:
    row = connection.execute(
        f"SELECT created_at FROM {SCHEMA}.plans WHERE tenant_id = %s AND plan_hash = %s", [tenant_id, plan_hash]
    ).fetchone()
    return row[0] if row else None


def tracked(connection: psycopg.Connection, tenant_id: str, workspace: str) -> set[Key]:
    """(type, id) of every managed resource instance the workspace's state holds."""
    if not state_table_exists(connection, tenant_id):
        return set()
    row = connection.execute(
        sql.SQL("SELECT data FROM {}.states WHERE name = %s").format(sql.Identifier(schema_for(tenant_id))), [workspace]
    ).fetchone()
    state = json.loads(row[0]) if row and row[0] else {}
    return {
        (resource["type"], str(instance["attributes"]["id"]))
        for resource in state.get("resources") or []
        if resource.get("mode") == "managed"
        for instance in resource.get("instances") or []
        if (instance.get("attributes") or {}).get("id") is not None
    }
