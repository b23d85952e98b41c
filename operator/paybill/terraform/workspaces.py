"""What each of a tenant's Terraform workspaces holds and what it was last applied with, read from PostgreSQL (the
pg backend's state and the operator's own record), never from the Tenant's status: whether there is anything to
destroy, and the module and inputs (region, ...) to destroy it with, rest on these."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from .backend import schema_for, state_table_exists
from .plans import SCHEMA


@dataclass(frozen=True)
class Workspace:
    name: str
    resources: int  # managed resources in its state
    module: str | None = None  # the module last applied in it (None: no record, e.g. applied by an older operator)
    variables: Mapping[str, Any] = field(default_factory=dict)  # the inputs it was applied with
    credentials_secret: str | None = None


def record_applied(
    connection: psycopg.Connection,
    tenant_id: str,
    workspace: str,
    module: str,
    variables: Mapping[str, Any],
    credentials_secret: str | None,
) -> None:
    """Before an apply: the module and inputs that build the workspace from now on (a destroy uses them)."""
    connection.execute(
        f"""INSERT INTO {SCHEMA}.applied (tenant_id, workspace, module, variables, credentials_secret)
            VALUES (%s, %s, %s, %s, %s)
            ON CONFLICT (tenant_id, workspace) DO UPDATE SET module = excluded.module, variables = excluded.variables,
                credentials_secret = excluded.credentials_secret, recorded_at = now()""",
        [tenant_id, workspace, module, Jsonb(dict(variables)), credentials_secret],
    )


def workspaces(connection: psycopg.Connection, tenant_id: str) -> dict[str, Workspace]:
    """Every workspace of the tenant's state, with its resource count and what it was last applied with."""
    counts = _resource_counts(connection, tenant_id)
    rows = connection.execute(
        f"SELECT workspace, module, variables, credentials_secret FROM {SCHEMA}.applied WHERE tenant_id = %s",
        [tenant_id],
    ).fetchall()
    applied = {row[0]: row[1:] for row in rows}
    return {
        name: Workspace(name, counts.get(name, 0), *applied[name]) if name in applied else Workspace(name, counts[name])
        for name in sorted(set(counts) | set(applied))
    }


def _resource_counts(connection: psycopg.Connection, tenant_id: str) -> dict[str, int]:
    if not state_table_exists(connection, tenant_id):
        return {}
    rows = connection.execute(
        sql.SQL("SELECT name, data FROM {}.states").format(sql.Identifier(schema_for(tenant_id)))
    ).fetchall()
    return {name: _managed(data) for name, data in rows}


def _managed(data: str | None) -> int:
    state = json.loads(data) if data else {}
    return sum(1 for resource in state.get("resources") or [] if resource.get("mode") == "managed")
