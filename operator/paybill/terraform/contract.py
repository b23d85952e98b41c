"""The module contract, checked by parsing the module (python-hcl2), before any run starts.

In: tenant_id, plan, region, cost_center (required), sizes (from the plan's quotas) and pool (defaulted).
Out: endpoint, database_host/port/name/user, database_password (sensitive), network_id, subnet_ids.
Every cloud resource is tagged with the tenant id, plan and cost center; the backend is the runner's.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import hcl2  # type: ignore[import-untyped]

INPUTS = {
    "tenant_id": "string",
    "plan": "string",
    "region": "string",
    "cost_center": "string",
    "sizes": "map(number)",
    "pool": "string",
}
DEFAULTED_INPUTS = ("sizes", "pool")
OUTPUTS = (
    "endpoint",
    "database_host",
    "database_port",
    "database_name",
    "database_user",
    "database_password",
    "network_id",
    "subnet_ids",
)
SENSITIVE_OUTPUTS = ("database_password",)
TAG_KEYS = ("paybill.dev/tenant", "paybill.dev/plan", "paybill.dev/cost-center")
TAG_VALUES = {
    "paybill.dev/tenant": "var.tenant_id",
    "paybill.dev/plan": "var.plan",
    "paybill.dev/cost-center": "var.cost_center",
}
# Resource types that cannot carry tags (their parent resource does); terraform_data is no cloud object,
# except in the `local` modules, where it stands for one and carries the tags in its input.
UNTAGGABLE = ("aws_iam_role_policy", "aws_iam_role_policy_attachment")
# python-hcl2's parser is one shared lark instance: two threads parsing at once get each other's trees
_PARSING = threading.Lock()


def parse(module: Path) -> dict[str, list[Any]]:
    """Every top-level block of every *.tf file in the module, merged by block type."""
    blocks: dict[str, list[Any]] = {}
    for path in sorted(module.glob("*.tf")):
        with path.open() as handle, _PARSING:
            for kind, entries in hcl2.load(handle).items():
                if not kind.startswith("__"):
                    blocks.setdefault(kind, []).extend(entries)
    return blocks


def violations(module: Path, stands_for_cloud_objects: bool = False) -> list[str]:
    """What the module at `module` lacks or breaks of the contract; [] when it meets it.
    `stands_for_cloud_objects`: its terraform_data resources play cloud resources (the `local` modules)."""
    blocks = parse(module)
    found: list[str] = []
    found += _input_violations(_named(blocks.get("variable", [])))
    found += _output_violations(_named(blocks.get("output", [])))
    found += _tag_violations(blocks, stands_for_cloud_objects)
    if any("backend" in block for block in blocks.get("terraform", [])):
        found.append("declares a backend: the runner supplies the pg backend")
    return found


def _input_violations(variables: dict[str, dict[str, Any]]) -> list[str]:
    found = []
    for name, kind in INPUTS.items():
        spec = variables.get(name)
        if spec is None:
            found.append(f"input {name} is missing")
        elif _expression(spec.get("type", "")) != kind:
            found.append(f"input {name} has type {_expression(spec.get('type', ''))}, not {kind}")
        elif ("default" in spec) != (name in DEFAULTED_INPUTS):
            found.append(f"input {name} {'needs' if name in DEFAULTED_INPUTS else 'must not have'} a default")
    found += [f"input {name} is not in the contract" for name in variables if name not in INPUTS]
    return found


def _output_violations(outputs: dict[str, dict[str, Any]]) -> list[str]:
    found = [f"output {name} is missing" for name in OUTPUTS if name not in outputs]
    found += [
        f"output {name} must be sensitive"
        for name in SENSITIVE_OUTPUTS
        if name in outputs and outputs[name].get("sensitive") is not True
    ]
    found += [
        f"output {name} is sensitive but not in {SENSITIVE_OUTPUTS}"
        for name, spec in outputs.items()
        if spec.get("sensitive") is True and name not in SENSITIVE_OUTPUTS
    ]
    return found


def _tag_violations(blocks: dict[str, list[Any]], stands_for_cloud_objects: bool) -> list[str]:
    found = []
    tags = next((entry["tags"] for entry in blocks.get("locals", []) if "tags" in entry), None)
    if not isinstance(tags, dict) or {_unquote(k): _expression(v) for k, v in tags.items()} != TAG_VALUES:
        found.append(f"locals.tags must map {', '.join(TAG_KEYS)} to the tenant id, plan and cost center")
    for kind, name, body in _resources(blocks):
        if kind in UNTAGGABLE or (kind == "terraform_data" and not stands_for_cloud_objects):
            continue
        carrier = body.get("input") if kind == "terraform_data" else body.get("tags")
        if "local.tags" not in str(carrier):
            found.append(f"resource {kind}.{name} is not tagged with local.tags")
    return found


def _resources(blocks: dict[str, list[Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (_unquote(kind), _unquote(name), body)
        for entry in blocks.get("resource", [])
        for kind, named in entry.items()
        if not kind.startswith("__")
        for name, body in named.items()
        if not name.startswith("__")
    ]


def _named(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_unquote(name): body for entry in entries for name, body in entry.items() if not name.startswith("__")}


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _expression(value: Any) -> str:
    text = str(value)
    return text[2:-1] if text.startswith("${") and text.endswith("}") else _unquote(text)
