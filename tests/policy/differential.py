"""Decisions of the policy engine as plain data, for comparing two builds of it (compiled and from source).

Run as a script it reads cases (JSON on stdin) and writes their decisions (JSON on stdout), with the engine as this
process imports it: `PAYBILL_POLICY_SOURCE=1` makes that the source.
"""

from __future__ import annotations

import dataclasses
import importlib.machinery
import json
import random
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent.parent))  # as a script: tests.policy.* importable

from tests.policy.grammar import Grammar, RandomChooser  # noqa: E402
from tests.policy.oracle import SCHEMA_SQL, policies  # noqa: E402

from paybill.policy import PolicyEngine, Schema, compiled  # noqa: E402

TENANTS = (None, "acme")


def cases(generated: int, seed: int) -> list[dict[str, Any]]:
    """Every corpus statement and `generated` statements of the fuzzing grammar (hostile fragments included)."""
    found = []
    for corpus in ("adversarial.jsonl", "legitimate.jsonl", "fuzz-findings.jsonl"):
        for line in (HERE / corpus).read_text().splitlines():
            if line.strip():
                case = json.loads(line)
                found.append({"sql": case["sql"], "params": case.get("params") or []})
    rng = random.Random(seed)
    for _ in range(generated):
        grammar = Grammar(RandomChooser(rng), hostility=rng.choice((0, 4, 20)))
        found.append({"sql": grammar.statement(), "params": grammar.params})
    return found


def decisions(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Each case decided under each fuzzed policy, for each tenant; and which modules the engine ran as."""
    schema = Schema.from_ddl(SCHEMA_SQL)
    engines = {name: PolicyEngine(spec, schema) for name, spec in policies().items()}
    decided = []
    for case in found:
        for name, engine in engines.items():
            for tenant in TENANTS:
                try:
                    decision = engine.decide("agent:support-bot", case["sql"], list(case["params"]), tenant)
                    decided.append({"policy": name, "tenant": tenant, **_plain(decision)})
                except Exception as exc:  # a crash is a result to compare too
                    decided.append({"policy": name, "tenant": tenant, "error": f"{type(exc).__name__}: {exc}"})
    modules = {name: str(sys.modules[f"paybill.policy.{name}"].__file__) for name in compiled.COMPILED}
    return {"decisions": decided, "compiled": {name: _is_extension(path) for name, path in modules.items()}}


def _plain(decision: Any) -> dict[str, Any]:
    data = {field.name: getattr(decision, field.name) for field in dataclasses.fields(decision)}
    data["reasons"] = [reason.to_json() for reason in decision.reasons]
    return json.loads(json.dumps(data, default=repr, sort_keys=True))


def _is_extension(path: str) -> bool:
    return path.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES))


if __name__ == "__main__":
    json.dump(decisions(json.load(sys.stdin)), sys.stdout)
