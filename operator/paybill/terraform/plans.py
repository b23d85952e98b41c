"""Saved plans: their summary (pure, from `terraform show -json`), and their store in PostgreSQL, outside etcd.

Status carries only the summary; the plan file and its JSON (sensitive values masked) stay in the
`paybill_terraform.plans` table, keyed by tenant and the plan file's sha256, for approval and audit. The same
schema keeps what each workspace was applied with (`applied`, workspaces.py).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from psycopg.types.json import Jsonb

from .connections import Connections
from .models import PlanSummary

SCHEMA = "paybill_terraform"
MASK = "(sensitive)"
_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SCHEMA};
CREATE TABLE IF NOT EXISTS {SCHEMA}.plans (
    tenant_id  text NOT NULL,
    plan_hash  text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    summary    jsonb NOT NULL,
    plan_json  jsonb NOT NULL,
    plan_file  bytea NOT NULL,
    PRIMARY KEY (tenant_id, plan_hash)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.applied (
    tenant_id          text NOT NULL,
    workspace          text NOT NULL,
    module             text NOT NULL,
    variables          jsonb NOT NULL,
    credentials_secret text,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workspace)
);
ALTER TABLE {SCHEMA}.applied ADD COLUMN IF NOT EXISTS config_digest text;
CREATE TABLE IF NOT EXISTS {SCHEMA}.planned (
    tenant_id     text NOT NULL,
    plan_hash     text NOT NULL,
    config_digest text NOT NULL,
    PRIMARY KEY (tenant_id, plan_hash)
);
CREATE TABLE IF NOT EXISTS {SCHEMA}.applying (
    tenant_id  text NOT NULL,
    workspace  text NOT NULL,
    run_id     text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, workspace)
)"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def artifact_ref(tenant_id: str, plan_hash: str) -> str:
    return f"postgresql:{SCHEMA}.plans/{tenant_id}/{plan_hash}"


def summarize(tenant_id: str, plan: dict[str, Any], plan_hash: str) -> PlanSummary:
    """Terraform's own counting: a replacement is one add and one destroy; reads and no-ops are nothing."""
    adds = changes = destroys = 0
    addresses = []
    for change in plan.get("resource_changes") or []:
        actions = set(change.get("change", {}).get("actions", []))
        if actions <= {"no-op", "read"}:
            continue
        addresses.append(change["address"])
        adds += "create" in actions
        destroys += "delete" in actions
        changes += "update" in actions
    return PlanSummary(
        tenant_id=tenant_id,
        adds=adds,
        changes=changes,
        destroys=destroys,
        plan_hash=plan_hash,
        artifact=artifact_ref(tenant_id, plan_hash),
        addresses=tuple(addresses),
    )


def masked(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan JSON fit to keep: sensitive values masked, variables of the configuration's sensitive ones
    masked, prior state (the backend already holds it) dropped; then every value Terraform marked sensitive
    anywhere is masked wherever else it appears unmarked (a password made in terraform_data, whose output
    carries no mark, flows into other resources' attributes and outputs)."""
    secrets = _marked_values(plan)
    plan = dict(plan)
    plan.pop("prior_state", None)
    for key in ("resource_changes", "resource_drift"):
        plan[key] = [_mask_change(entry) for entry in plan.get(key) or []]
    plan["output_changes"] = {
        name: _mask_change_body(change) for name, change in (plan.get("output_changes") or {}).items()
    }
    plan["planned_values"] = _mask_planned(plan.get("planned_values") or {})
    sensitive_vars = {
        name
        for name, spec in ((plan.get("configuration") or {}).get("root_module", {}).get("variables") or {}).items()
        if spec.get("sensitive")
    }
    plan["variables"] = {
        name: ({"value": MASK} if name in sensitive_vars else value)
        for name, value in (plan.get("variables") or {}).items()
    }
    masked_plan: dict[str, Any] = _mask_values(plan, secrets)
    return masked_plan


SECRET_MIN_LENGTH = 8  # a marked value shorter than this (a port, a flag) is not hunted for elsewhere


def _marked_values(plan: dict[str, Any]) -> set[str]:
    """The strings (of SECRET_MIN_LENGTH or more) Terraform marks sensitive in the plan's changes and outputs."""
    found: set[str] = set()
    for key in ("resource_changes", "resource_drift"):
        for entry in plan.get(key) or []:
            change = entry.get("change") or {}
            found |= _strings_under(change.get("before"), change.get("before_sensitive"))
            found |= _strings_under(change.get("after"), change.get("after_sensitive"))
    for change in (plan.get("output_changes") or {}).values():
        found |= _strings_under(change.get("before"), change.get("before_sensitive"))
        found |= _strings_under(change.get("after"), change.get("after_sensitive"))
    return {value for value in found if len(value) >= SECRET_MIN_LENGTH}


def _strings_under(value: Any, sensitive: Any, marked: bool = False) -> set[str]:
    marked = marked or sensitive is True
    if isinstance(value, str):
        return {value} if marked else set()
    if isinstance(value, dict):
        inner = sensitive if isinstance(sensitive, dict) else {}
        return {s for key, item in value.items() for s in _strings_under(item, inner.get(key), marked)}
    if isinstance(value, list):
        inner_list = sensitive if isinstance(sensitive, list) else []
        return {
            s
            for i, item in enumerate(value)
            for s in _strings_under(item, inner_list[i] if i < len(inner_list) else None, marked)
        }
    return set()


def _mask_values(value: Any, secrets: set[str]) -> Any:
    """`value` with every string that holds one of `secrets` masked."""
    if not secrets:
        return value
    if isinstance(value, str):
        return MASK if any(secret in value for secret in secrets) else value
    if isinstance(value, dict):
        return {key: _mask_values(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_values(item, secrets) for item in value]
    return value


def _mask_change(entry: dict[str, Any]) -> dict[str, Any]:
    return {**entry, "change": _mask_change_body(entry.get("change") or {})}


def _mask_change_body(change: dict[str, Any]) -> dict[str, Any]:
    return {
        **change,
        "before": _mask(change.get("before"), change.get("before_sensitive")),
        "after": _mask(change.get("after"), change.get("after_sensitive")),
    }


def _mask_planned(values: dict[str, Any]) -> dict[str, Any]:
    outputs = {
        name: ({**out, "value": MASK} if out.get("sensitive") else out)
        for name, out in (values.get("outputs") or {}).items()
    }
    return {**values, "outputs": outputs, "root_module": _mask_module(values.get("root_module") or {})}


def _mask_module(module: dict[str, Any]) -> dict[str, Any]:
    resources = [
        {**r, "values": _mask(r.get("values"), r.get("sensitive_values"))} for r in module.get("resources") or []
    ]
    children = [_mask_module(child) for child in module.get("child_modules") or []]
    return {**module, "resources": resources, "child_modules": children}


def _mask(value: Any, sensitive: Any) -> Any:
    """Replace every part of `value` that Terraform's parallel `*_sensitive` structure marks true."""
    if sensitive is True:
        return MASK
    if isinstance(value, dict) and isinstance(sensitive, dict):
        return {key: _mask(item, sensitive.get(key)) for key, item in value.items()}
    if isinstance(value, list) and isinstance(sensitive, list):
        return [_mask(item, sensitive[i] if i < len(sensitive) else None) for i, item in enumerate(value)]
    return value


class PlanStore:
    """The plans table, reached with the backend's DSN."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        with connections.connection() as connection:
            connection.execute("SELECT pg_advisory_lock(hashtext('paybill_terraform.plans ddl'))")
            connection.execute(_DDL)
            connection.execute("SELECT pg_advisory_unlock(hashtext('paybill_terraform.plans ddl'))")

    def save(self, summary: PlanSummary, plan_json: dict[str, Any], plan_file: bytes) -> None:
        with self.connections.connection() as connection:
            connection.execute(
                f"""INSERT INTO {SCHEMA}.plans (tenant_id, plan_hash, summary, plan_json, plan_file)
                    VALUES (%s, %s, %s, %s, %s) ON CONFLICT (tenant_id, plan_hash) DO NOTHING""",
                [
                    summary.tenant_id,
                    summary.plan_hash,
                    Jsonb(_summary_json(summary)),
                    Jsonb(masked(plan_json)),
                    plan_file,
                ],
            )

    def plan_file(self, tenant_id: str, plan_hash: str) -> bytes | None:
        with self.connections.connection() as connection:
            row = connection.execute(
                f"SELECT plan_file FROM {SCHEMA}.plans WHERE tenant_id = %s AND plan_hash = %s", [tenant_id, plan_hash]
            ).fetchone()
        return bytes(row[0]) if row else None

    def summary(self, tenant_id: str, plan_hash: str) -> PlanSummary:
        with self.connections.connection() as connection:
            row = connection.execute(
                f"SELECT summary FROM {SCHEMA}.plans WHERE tenant_id = %s AND plan_hash = %s", [tenant_id, plan_hash]
            ).fetchone()
        if row is None:
            raise KeyError(plan_hash)
        fields = dict(row[0])
        return PlanSummary(**{**fields, "addresses": tuple(fields.get("addresses", ()))})

    def plan_json(self, tenant_id: str, plan_hash: str) -> dict[str, Any] | None:
        with self.connections.connection() as connection:
            row = connection.execute(
                f"SELECT plan_json FROM {SCHEMA}.plans WHERE tenant_id = %s AND plan_hash = %s", [tenant_id, plan_hash]
            ).fetchone()
        return dict(row[0]) if row else None


def _summary_json(summary: PlanSummary) -> dict[str, Any]:
    return json.loads(json.dumps(summary.__dict__, default=list))
