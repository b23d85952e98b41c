"""What each of a tenant's Terraform workspaces holds and what it was last applied with, read from PostgreSQL (the
pg backend's state and the operator's own record), never from the Tenant's status: whether there is anything to
destroy, and the module and inputs (region, ...) to destroy it with, rest on these."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
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
    config_digest: str | None = None  # the configuration its last apply that succeeded was for (None: not applied)


def record_applied(
    connection: psycopg.Connection,
    tenant_id: str,
    workspace: str,
    module: str,
    variables: Mapping[str, Any],
    credentials_secret: str | None,
    config_digest: str | None = None,
) -> None:
    """Before an apply: the module and inputs that build the workspace from now on (a destroy uses them), and no
    configuration applied; once it succeeded, the same with its config digest (what 'applied' rests on)."""
    connection.execute(
        f"""INSERT INTO {SCHEMA}.applied (tenant_id, workspace, module, variables, credentials_secret, config_digest)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (tenant_id, workspace) DO UPDATE SET module = excluded.module, variables = excluded.variables,
                credentials_secret = excluded.credentials_secret, config_digest = excluded.config_digest,
                recorded_at = now()""",
        [tenant_id, workspace, module, Jsonb(dict(variables)), credentials_secret, config_digest],
    )


def record_planned(connection: psycopg.Connection, tenant_id: str, plan_hash: str, config_digest: str) -> None:
    """A saved plan's configuration: an approval applies it only while that is still the tenant's configuration."""
    connection.execute(
        f"""INSERT INTO {SCHEMA}.planned (tenant_id, plan_hash, config_digest) VALUES (%s, %s, %s)
            ON CONFLICT (tenant_id, plan_hash) DO UPDATE SET config_digest = excluded.config_digest""",
        [tenant_id, plan_hash, config_digest],
    )


def planned_digest(connection: psycopg.Connection, tenant_id: str, plan_hash: str) -> str | None:
    """The configuration the saved plan was made for (None: no record of this plan for this tenant)."""
    row = connection.execute(
        f"SELECT config_digest FROM {SCHEMA}.planned WHERE tenant_id = %s AND plan_hash = %s", [tenant_id, plan_hash]
    ).fetchone()
    return str(row[0]) if row else None


def workspaces(connection: psycopg.Connection, tenant_id: str) -> dict[str, Workspace]:
    """Every workspace of the tenant's state, with its resource count and what it was last applied with."""
    counts = _resource_counts(connection, tenant_id)
    rows = connection.execute(
        f"""SELECT workspace, module, variables, credentials_secret, config_digest
            FROM {SCHEMA}.applied WHERE tenant_id = %s""",
        [tenant_id],
    ).fetchall()
    applied = {row[0]: row[1:] for row in rows}
    return {
        name: Workspace(name, counts.get(name, 0), *applied[name]) if name in applied else Workspace(name, counts[name])
        for name in sorted(set(counts) | set(applied))
    }


def managed_addresses(connection: psycopg.Connection, tenant_id: str, workspace: str) -> list[tuple[str, str]]:
    """(resource type, address) of every managed resource in the workspace's state ([] when it has none)."""
    if not state_table_exists(connection, tenant_id):
        return []
    row = connection.execute(
        sql.SQL("SELECT data FROM {}.states WHERE name = %s").format(sql.Identifier(schema_for(tenant_id))),
        [workspace],
    ).fetchone()
    state = json.loads(row[0]) if row and row[0] else {}
    return [
        (str(resource["type"]), ".".join(filter(None, (resource.get("module"), resource["type"], resource["name"]))))
        for resource in state.get("resources") or []
        if resource.get("mode") == "managed"
    ]


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


def files_digest(directory: Path) -> str:
    """The module's Terraform files, as one sha256."""
    parts = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name.endswith((".tf", ".tf.json")):
            parts += [path.name, path.read_text()]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def config_digest(
    module: Path | None, inputs: Mapping[str, Any], credentials_secret: str | None, workspace: str
) -> str:
    """What a plan depends on: the module's files, the inputs, the workspace and where the credentials come from."""
    files = files_digest(module) if module is not None and module.is_dir() else "-"
    text = json.dumps([files, dict(inputs), credentials_secret, workspace], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()
