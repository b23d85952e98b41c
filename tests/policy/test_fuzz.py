"""Grammar-based fuzzing of the agent gate on real PostgreSQL.

Hypothesis builds statements from tests/policy/grammar.py; every statement the engine admits for tenant acme
is run (its rewritten SQL) by tests/policy/oracle.py as a role that bypasses row-level security, in a
transaction that is never committed, and must keep to acme's rows, the readable columns and the allowed
writes, and leave nothing behind. PAYBILL_FUZZ_EXAMPLES sets the number of examples (400 by default);
bench/fuzz.py runs the long campaign. Escapes found so far are in fuzz-findings.jsonl: each must be denied,
or run without breaking the oracle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from paybill.policy import PolicyEngine, Schema

from .grammar import statements
from .oracle import SCHEMA_SQL, Oracle, create_database, fuzz_server, policies

PRINCIPAL = "agent:support-bot"
EXAMPLES = int(os.environ.get("PAYBILL_FUZZ_EXAMPLES", "400"))
FINDINGS = Path(__file__).parent / "fuzz-findings.jsonl"
Gate = tuple[PolicyEngine, Oracle]


def findings() -> list[dict]:
    if not FINDINGS.exists():
        return []
    return [json.loads(line) for line in FINDINGS.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def gates() -> Iterator[dict[str, Gate]]:
    """An engine and an oracle per fuzzed policy, on a server of their own (prepared transactions on)."""
    with fuzz_server() as server:
        dsn = create_database(server.dsn)
        schema = Schema.from_ddl(SCHEMA_SQL)
        built = {name: (PolicyEngine(spec, schema), Oracle(dsn, spec)) for name, spec in policies().items()}
        yield built
        for _, oracle in built.values():
            oracle.close()


# -- the oracle can fail: each escape class it must see, run straight (without the engine) -----------------

ESCAPES = [
    ("SELECT name FROM customers", "depends on hidden data"),
    ("SELECT count(*) FROM (SELECT id FROM orders) o", "depends on hidden data"),
    ("SELECT length(ssn) FROM (SELECT ssn FROM customers WHERE tenant_id = 'acme') c", "depends on hidden data"),
    ("SELECT api_key FROM secrets WHERE tenant_id = 'acme'", "hidden data (APIKEY-)"),
    ("UPDATE orders SET status = 'x' WHERE id = 1010", "changes a orders row of tenant globex"),
    ("UPDATE orders SET total = 0 WHERE id = 10 AND tenant_id = 'acme'", "changes orders.total without an update"),
    ("DELETE FROM orders WHERE id = 10 AND tenant_id = 'acme'", "deletes from orders without a delete rule"),
    ("SELECT id FROM customers WHERE tenant_id = 'acme' FOR KEY SHARE", "locks 5 customers row(s) without"),
    (
        "UPDATE orders SET status = (SELECT count(*) FROM orders)::text WHERE id = 10 AND tenant_id = 'acme'",
        "what it writes depends on hidden data",
    ),
    (
        "VALUES (1) OFFSET (SELECT length(set_config('statement_timeout', '0', false)))",
        "leaves statement_timeout behind",
    ),
    ("VALUES (1) LIMIT (SELECT pg_advisory_lock(4242)::text::int)", "leaves locks behind"),
    ("SELECT lo_from_bytea(0, 'x')", "leaves large objects behind"),
    ("SELECT pg_notify('tenant_globex', 'x')", "sends a notification"),
    ("SELECT 1 ORDER BY 1 USING ~<~", "sorts with operator ~<~"),
    ("SELECT 'a' OPERATOR(pg_catalog.~) 'b'", "uses operator pg_catalog.~"),
    ("SELECT \"LOWER\"('x')", "calls function LOWER"),
    ('SELECT CAST(1 AS "TEXT")', "casts to TEXT"),
    ("SELECT count(*) FROM pg_roles", "reads relation pg_roles"),
    ("SELECT current_user", "reads session information"),
    ("SELECT pg_terminate_backend(pg_backend_pid())", "breaks the session"),
    ("SELECT id FROM orders WHERE tenant_id = 'acme' LIMIT 5 FOR UPDATE", ""),
    ("SELECT id FROM orders WHERE tenant_id = 'acme' FOR UPDATE", "locks 20 orders rows, more than maxRowsWritten 10"),
]
FILTERED_ESCAPES = [
    ("SELECT id, status FROM orders WHERE tenant_id = 'acme'", "depends on hidden data"),
    ("UPDATE orders SET status = 'open' WHERE id = 13 AND tenant_id = 'acme'", "rowFilter excludes"),
    ("SELECT id, status FROM orders WHERE tenant_id = 'acme' AND status <> 'canceled'", ""),
]


def test_values_the_agent_sent_are_not_hidden_data(gates: dict[str, Gate]) -> None:
    assert gates["support"][1].check("SELECT $1::text, $1::int", ["globex"]) == []


@pytest.mark.parametrize(
    ("policy", "statement", "expected"),
    [("support", *e) for e in ESCAPES] + [("filtered", *e) for e in FILTERED_ESCAPES],
    ids=[e[1] or e[0] for e in ESCAPES + FILTERED_ESCAPES],
)
def test_the_oracle_sees_each_kind_of_escape(
    gates: dict[str, Gate], policy: str, statement: str, expected: str
) -> None:
    """Each statement runs straight (not through the engine); an empty expectation means it keeps to the rules."""
    problems = gates[policy][1].check(statement)
    if expected:
        assert any(expected in p for p in problems), problems
    else:
        assert problems == []


@pytest.mark.parametrize("policy", sorted(policies()))
def test_the_oracle_passes_the_engines_rewrite_of_legitimate_statements(gates: dict[str, Gate], policy: str) -> None:
    engine, oracle = gates[policy]
    cases = [json.loads(line) for line in (Path(__file__).parent / "legitimate.jsonl").read_text().splitlines()]
    checked = 0
    for case in cases:
        decision = engine.decide(PRINCIPAL, case["sql"], case.get("params"), tenant="acme")
        if decision.allowed:
            assert oracle.check(decision.sql, case.get("params"), decision.statement or "select") == [], case["sql"]
            checked += 1
    assert checked >= len(cases) * 3 // 4


# -- the bounded fuzz run ----------------------------------------------------------------------------------


@pytest.mark.slow
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
@given(policy=st.sampled_from(sorted(policies())), generated=statements())
def test_admitted_statements_keep_to_the_tenant(
    gates: dict[str, Gate], policy: str, generated: tuple[str, list]
) -> None:
    statement, params = generated
    engine, oracle = gates[policy]
    decision = engine.decide(PRINCIPAL, statement, params, tenant="acme")
    event("admitted" if decision.allowed else "denied")
    if decision.allowed:
        problems = oracle.check(decision.sql or "", params, kind=decision.statement or "select")
        assert problems == [], (
            f"{policy} policy admitted {statement!r} with {params!r} (runs as {decision.sql!r}): {problems}"
        )


# -- escapes found by fuzzing: each must be denied, or run harmlessly (fails until the engine or schema is fixed) --


@pytest.mark.parametrize("finding", findings(), ids=lambda f: f["id"])
def test_fuzz_findings_are_closed(gates: dict[str, Gate], finding: dict) -> None:
    engine, oracle = gates[finding.get("policy", "support")]
    decision = engine.decide(PRINCIPAL, finding["sql"], finding.get("params"), tenant="acme")
    if decision.allowed:
        problems = oracle.check(decision.sql or "", finding.get("params"), kind=decision.statement or "select")
        assert problems == [], f"{finding['why']} (admitted, runs as {decision.sql!r}): {problems}"
