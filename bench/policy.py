"""Policy engine decision latency (cold and cached) beside cedarpy, and gated vs raw execution on PostgreSQL."""

from __future__ import annotations

import functools
import gc
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.database.server import LocalPostgres
from paybill.policy import PolicyEngine, Schema
from paybill.policy.check import load_policy
from paybill.policy.decision import Decision
from paybill.policy.grants import agent_role, apply_grants
from paybill.policy.guard import ExecutionGuard

PRINCIPAL = "agent:support-bot"
TENANT = "acme"
STATEMENT = "SELECT id, status, total FROM orders WHERE id = $1"
BASE_DDL = """
CREATE TABLE customers (id integer PRIMARY KEY, tenant_id text NOT NULL, name text, email text, ssn text);
CREATE TABLE orders (id integer PRIMARY KEY, tenant_id text NOT NULL, customer_id integer, status text,
                     total numeric(12, 2), created_at timestamptz DEFAULT now());
"""


def filler_tables(count: int) -> str:
    return "".join(f"CREATE TABLE t{n} (id integer, tenant_id text, a text, b integer);\n" for n in range(count))


def policy(rules: int) -> AgentPolicySpec:
    """`rules` rules: the one that matters for the statement, the rest on other tables (a deny every tenth)."""
    body = [{"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"], "columns": ["*"]}]
    for n in range(rules - 1):
        body.append({"id": f"rule-{n}", "effect": "deny" if n % 10 == 9 else "allow",
                     "actions": ["select", "update"] if n % 3 else ["select"], "tables": [f"t{n}"],
                     "columns": ["id", "a"] if n % 2 else ["*"]})
    return AgentPolicySpec.model_validate({"subjects": [PRINCIPAL], "rules": body,
                                           "functions": ["count", "lower"], "limits": {"maxCost": 1e9}})


def cedar_policies(rules: int) -> str:
    lines = ['permit(principal == Agent::"support-bot", action == Action::"select", resource == Table::"orders");']
    for n in range(rules - 1):
        effect = "forbid" if n % 10 == 9 else "permit"
        lines.append(f'{effect}(principal == Agent::"support-bot", action == Action::"select", '
                     f'resource == Table::"t{n}");')
    return "\n".join(lines)


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def timed(call: Callable[[int], object], runs: int, before: Callable[[], object] | None = None) -> list[float]:
    samples = []
    gc.disable()
    try:
        for i in range(runs):
            if before is not None:
                before()
            start = time.perf_counter_ns()
            call(i)
            samples.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()
    return samples


def _decide(engine: PolicyEngine, i: int) -> Decision:
    return engine.decide(PRINCIPAL, STATEMENT, [i], TENANT)


def _authorize(cedarpy: Any, request: dict[str, Any], policies: str, _: int) -> object:
    return cedarpy.is_authorized(request, policies, [])


def decision_rows(runs: int) -> list[tuple[str, ...]]:
    import cedarpy

    rows = []
    for rules in (10, 100, 1000):
        schema = Schema.from_ddl(BASE_DDL + filler_tables(rules))
        engine = PolicyEngine(policy(rules), schema)
        decide = functools.partial(_decide, engine)
        assert decide(0).allowed
        timed(decide, 200, engine.clear_cache)
        cold = percentiles(timed(decide, runs, engine.clear_cache))
        cached = percentiles(timed(decide, runs * 5))
        text = cedar_policies(rules)
        request = {"principal": 'Agent::"support-bot"', "action": 'Action::"select"', "resource": 'Table::"orders"',
                   "context": {}}
        assert cedarpy.is_authorized(request, text, []).decision == cedarpy.Decision.Allow
        authorize = functools.partial(_authorize, cedarpy, request, text)
        cedar = percentiles(timed(authorize, max(runs // 4, 200)))
        rows.append((str(rules), *(f"{v:.0f}" for v in (*cold, *cached, *cedar))))
    return rows


def corpus_row(rounds: int) -> tuple[str, ...]:
    """Cold decisions over the legitimate test corpus (joins, subqueries, CTEs, windows) under the support policy."""
    corpus = Path(__file__).resolve().parent.parent / "tests" / "policy"
    cases = [json.loads(line) for line in (corpus / "legitimate.jsonl").read_text().splitlines() if line.strip()]
    engine = PolicyEngine(load_policy(corpus / "support-policy.yaml").spec,
                          Schema.from_ddl((corpus / "schema.sql").read_text()))
    samples: list[float] = []
    for case in cases:
        decide = functools.partial(_decide_case, engine, case)
        timed(decide, 20, engine.clear_cache)
        samples += timed(decide, rounds, engine.clear_cache)
    p50, p99 = percentiles(samples)
    return (str(len(cases)), f"{p50:.0f}", f"{p99:.0f}", f"{max(samples):.0f}")


def _decide_case(engine: PolicyEngine, case: dict[str, Any], _: int) -> Decision:
    decision = engine.decide(case["principal"], case["sql"], case.get("params"), TENANT)
    assert decision.allowed, decision.reasons
    return decision


def execution_rows(rounds: int, per_round: int) -> list[tuple[str, ...]]:
    directory = Path(tempfile.mkdtemp(prefix="paybill-bench-pg-"))
    os.chmod(directory, 0o755)
    server = LocalPostgres(directory)
    server.start()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(BASE_DDL)
            conn.execute("INSERT INTO orders (id, tenant_id, customer_id, status, total) "
                         "SELECT n, CASE WHEN n % 2 = 0 THEN 'acme' ELSE 'globex' END, n, 'open', n "
                         "FROM generate_series(1, 10000) n")
            conn.execute("ANALYZE orders")
            schema = Schema.from_ddl(BASE_DDL)
            engine = PolicyEngine(policy(10), schema)
            role = agent_role("bench", TENANT)
            apply_grants(conn, engine.rules, schema, role, TENANT, password="bench")
        dsn = psycopg.conninfo.make_conninfo(server.dsn, user=role, password="bench")
        raw = psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.RawCursor)
        raw.execute("SET statement_timeout = 2000")
        with raw, ExecutionGuard(engine, dsn, PRINCIPAL, TENANT) as guard:
            guard.engine.rules.limits.maxStatementsPerRun = 10 ** 9
            ids = [2 * (1 + n % 50) for n in range(per_round)]
            raw_call = lambda i: raw.execute(STATEMENT, [ids[i]]).fetchall()  # noqa: E731
            gated_call = lambda i: guard.execute(STATEMENT, [ids[i]])  # noqa: E731
            assert guard.execute(STATEMENT, [2]).rows == raw.execute(STATEMENT, [2]).fetchall()
            timed(raw_call, per_round)
            timed(gated_call, per_round)
            raw_samples: list[float] = []
            gated_samples: list[float] = []
            for _ in range(rounds):  # interleaved so drift hits both sides alike
                raw_samples += timed(raw_call, per_round)
                gated_samples += timed(gated_call, per_round)
    finally:
        server.stop()
    raw_p50, raw_p99 = percentiles(raw_samples)
    gated_p50, gated_p99 = percentiles(gated_samples)
    raw_mean, gated_mean = statistics.fmean(raw_samples), statistics.fmean(gated_samples)
    return [("raw psycopg", f"{raw_p50:.0f}", f"{raw_p99:.0f}", f"{raw_mean:.0f}", "1.00"),
            ("gated (engine + guard)", f"{gated_p50:.0f}", f"{gated_p99:.0f}", f"{gated_mean:.0f}",
             f"{gated_p50 / raw_p50:.2f} (p50), {gated_mean / raw_mean:.2f} (mean)")]


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    runs = 500 if quick else 3000
    decisions = decision_rows(runs)
    corpus = corpus_row(100 if quick else 400)
    execution = execution_rows(rounds=3 if quick else 10, per_round=300 if quick else 1000)
    return "\n".join([
        "## Policy engine (issue 4)",
        "",
        f"Decision latency in µs for `{STATEMENT}` with tenant `{TENANT}` (pooled: the tenant predicate and",
        "LIMIT are injected), including parsing. *Cold*: the decision cache is cleared before every call, so",
        "each call parses (pglast, C), resolves names, matches rules, rewrites and deparses (C). *Cached*: the same",
        "statement with a new parameter each call (the cache is keyed by principal, tenant and statement under",
        "the policy version; parameters are type-checked on every call). cedarpy evaluates an equivalent",
        "authorization-only request (principal, action select, resource table orders) against the same number",
        "of permit/forbid policies, passed as policy text as a caller would.",
        "",
        table(("rules", "cold p50", "cold p99", "cached p50", "cached p99", "cedarpy p50", "cedarpy p99"), decisions),
        "",
        "Cold decisions over the legitimate test corpus (`tests/policy/legitimate.jsonl`: joins, correlated",
        "and LATERAL subqueries, CTEs, aggregates, window functions, DML) under the 4-rule support policy, each",
        "statement decided repeatedly with the cache cleared; µs across all samples:",
        "",
        table(("statements", "cold p50", "cold p99", "max"), [corpus]),
        "",
        "Gated vs raw execution of the repeated point SELECT on local PostgreSQL (10,000 rows, half per tenant),",
        "both logged in as the agent's role over loopback; µs per statement, interleaved rounds:",
        "",
        table(("path", "p50", "p99", "mean", "gated/raw"), execution),
    ])


if __name__ == "__main__":
    print(run())
