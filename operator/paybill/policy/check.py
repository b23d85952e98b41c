"""`paybill policy check`: decisions for a JSONL file of cases, one JSON object per line, same order."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from ..api.agentpolicy import AgentPolicy, AgentPolicySpec
from .engine import PolicyEngine
from .schema import Schema


def load_policy(path: Path) -> AgentPolicy:
    """An AgentPolicy manifest from YAML; a ValueError names what is wrong."""
    try:
        manifest = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ValueError(f"cannot read policy {path}: {error}") from None
    if not isinstance(manifest, dict):
        raise ValueError(f"policy {path} is not a YAML mapping")
    try:
        return AgentPolicy.from_manifest(manifest)
    except ValidationError as error:
        raise ValueError(f"policy {path} is invalid: {error}") from None


def _malformed(case_id: Any, message: str) -> dict[str, Any]:
    return {
        "id": case_id,
        "decision": "deny",
        "reasons": [{"code": "malformed_input", "message": message}],
        "sql": None,
    }


def check_lines(
    engine: PolicyEngine, lines: Iterable[str], tenant: str | None, approvals: frozenset[str] = frozenset()
) -> Iterator[str]:
    """One output line per non-blank input line; never raises on bad input.

    The lines are the agent's words: the tenant and the approvals come from the caller, never from a line
    (a line may name a tenant only when the caller gave none, or the same one)."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            case = json.loads(line)
        except json.JSONDecodeError as error:
            result = _malformed(None, f"line {number} is not JSON: {error.msg}")
        except RecursionError:
            result = _malformed(None, f"line {number} is nested too deeply to read")
        else:
            result = _check_case(engine, case, number, tenant, approvals)
        yield json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _check_case(
    engine: PolicyEngine, case: Any, number: int, tenant: str | None, approvals: frozenset[str]
) -> dict[str, Any]:
    if not isinstance(case, dict):
        return _malformed(None, f"line {number} is not a JSON object")
    case_id = case.get("id")
    principal, sql, params = case.get("principal"), case.get("sql"), case.get("params", [])
    if not isinstance(principal, str) or not isinstance(sql, str):
        return _malformed(case_id, f"line {number} needs string fields principal and sql")
    if not isinstance(params, list):
        return _malformed(case_id, f"line {number}: params must be a list")
    case_tenant = case.get("tenant", tenant)
    if case_tenant is not None and not isinstance(case_tenant, str):
        return _malformed(case_id, f"line {number}: tenant must be a string")
    if tenant is not None and case_tenant != tenant:
        return _malformed(case_id, f"line {number}: the tenant is {tenant!r} (--tenant); a line cannot change it")
    if "approvals" in case:
        return _malformed(case_id, f"line {number}: approvals come from --approve, never from the input")
    decision = engine.decide(principal, sql, params, case_tenant, approvals)
    return {"id": case_id, **decision.to_json()}


def run_check(
    policy: AgentPolicySpec,
    input_path: str,
    schema: Schema,
    tenant: str | None,
    approvals: frozenset[str] = frozenset(),
) -> Iterator[str]:
    """Decisions for the cases in `input_path` ("-": standard input) under `policy`, against `schema` (from DDL,
    or read from a live database by the caller: this module opens no connection)."""
    engine = PolicyEngine(policy, schema)
    if input_path == "-":
        import sys

        yield from check_lines(engine, sys.stdin, tenant, approvals)
    else:
        with open(input_path, encoding="utf-8", errors="replace") as handle:
            yield from check_lines(engine, handle, tenant, approvals)
