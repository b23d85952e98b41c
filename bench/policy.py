"""Policy engine decision latency (cold and cached) beside cedarpy, and gated vs raw execution on PostgreSQL."""

from __future__ import annotations

import collections
import functools
import gc
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from paybill.api.agentpolicy import MAX_RULES, AgentPolicySpec
from paybill.database.agents.grants import agent_role, apply_grants
from paybill.database.agents.guard import ExecutionGuard
from paybill.database.server import LocalPostgres
from paybill.policy import PolicyEngine, Schema
from paybill.policy.analysis import Analysis
from paybill.policy.check import load_policy
from paybill.policy.decision import Decision
from paybill.policy.tree import parse
from paybill.policy.validate import Validator

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
        body.append(
            {
                "id": f"rule-{n}",
                "effect": "deny" if n % 10 == 9 else "allow",
                "actions": ["select", "update"] if n % 3 else ["select"],
                "tables": [f"t{n}"],
                "columns": ["id", "a"] if n % 2 else ["*"],
            }
        )
    return AgentPolicySpec.model_validate(
        {
            "subjects": [{"serviceAccount": "tenant-agent", "agent": PRINCIPAL}],
            "rules": body,
            "functions": ["count", "lower"],
            "limits": {"maxCost": 1e9},
        }
    )


def cedar_policies(rules: int) -> str:
    lines = ['permit(principal == Agent::"support-bot", action == Action::"select", resource == Table::"orders");']
    for n in range(rules - 1):
        effect = "forbid" if n % 10 == 9 else "permit"
        lines.append(
            f'{effect}(principal == Agent::"support-bot", action == Action::"select", resource == Table::"t{n}");'
        )
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


def _fixed_work(iterations: int, _: int) -> int:
    total = 0
    for i in range(iterations):
        total += i
    return total


def fixed_work(median_us: float) -> Callable[[int], object]:
    """Work that is the same on every call (a pure-Python loop; nothing allocated, nothing cached), sized to take
    `median_us` at the median: timed beside the engine, its tail is what the host adds to any computation that long."""
    iterations = 1000
    took = percentiles(timed(functools.partial(_fixed_work, iterations), 300))[0]
    return functools.partial(_fixed_work, max(1, round(iterations * median_us / took)))


def decision_rows(runs: int) -> tuple[list[tuple[str, ...]], tuple[float, float]]:
    """The latency table's rows, and the fixed work's (p50, p99) timed interleaved with the 100-rule engine."""
    import cedarpy

    rows = []
    reference: list[float] = []
    for rules in (10, 100, MAX_RULES):  # an AgentPolicy holds at most MAX_RULES rules
        schema = Schema.from_ddl(BASE_DDL + filler_tables(rules))
        engine = PolicyEngine(policy(rules), schema)
        decide = functools.partial(_decide, engine)
        assert decide(0).allowed
        warm = timed(decide, 300, engine.clear_cache)
        work = fixed_work(percentiles(warm)[0]) if rules == 100 else None
        validator, switched_off = engine.validator, _NoValidation(engine.rules, engine.schema)
        with_validator: list[float] = []
        without_validator: list[float] = []
        for _ in range(4):  # interleaved, so load drift hits both alike
            with_validator += timed(decide, runs // 4, engine.clear_cache)
            engine.validator = switched_off
            without_validator += timed(decide, runs // 4, engine.clear_cache)
            engine.validator = validator
            if work is not None:
                reference += timed(work, runs // 4)
        cold, unvalidated = percentiles(with_validator), percentiles(without_validator)
        cached = percentiles(timed(decide, runs * 5))
        text = cedar_policies(rules)
        request = {
            "principal": 'Agent::"support-bot"',
            "action": 'Action::"select"',
            "resource": 'Table::"orders"',
            "context": {},
        }
        assert cedarpy.is_authorized(request, text, []).decision == cedarpy.Decision.Allow
        authorize = functools.partial(_authorize, cedarpy, request, text)
        cedar = percentiles(timed(authorize, max(runs // 4, 200)))
        rows.append((str(rules), *(f"{v:.0f}" for v in (*cold, *unvalidated, *cached, *cedar))))
    return rows, percentiles(reference)


CORPUS = Path(__file__).resolve().parent.parent / "tests" / "policy"
PEER_PYTHON = Path(__file__).resolve().parent.parent / ".venv-peer" / "bin" / "python"


def load_corpus(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (CORPUS / name).read_text().splitlines() if line.strip()]


def support_engine() -> PolicyEngine:
    return PolicyEngine(
        load_policy(CORPUS / "support-policy.yaml").spec, Schema.from_ddl((CORPUS / "schema.sql").read_text())
    )


def _decide_case(engine: PolicyEngine, case: dict[str, Any], _: int) -> Decision:
    decision = engine.decide(case["principal"], case["sql"], case.get("params"), TENANT)
    assert decision.allowed, decision.reasons
    return decision


class _NoValidation(Validator):
    """The same engine with the validator switched off (the compiled Validator's methods cannot be reassigned)."""

    def validate(self, sql: str, tenant: str | None) -> list[Any]:
        return []


class Peer:
    """postgres-mcp's SafeSqlDriver (restricted mode) in its own virtualenv, driven over a pipe (bench/peer.py)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [str(PEER_PYTHON), str(Path(__file__).with_name("peer.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=30)


def cedar_support_policies(engine: PolicyEngine) -> str:
    """The support policy's rules as Cedar policies over (agent, action, table): authorization only."""
    lines = []
    for rule in engine.rules.spec.rules:
        effect = "permit" if rule.effect == "allow" else "forbid"
        for action in rule.actions:
            for table in rule.tables:
                resource = "resource" if table == "*" else f'resource == Table::"{table}"'
                lines.append(f'{effect}(principal == Agent::"support-bot", action == Action::"{action}", {resource});')
    return "\n".join(lines)


def cedar_requests(engine: PolicyEngine, case: dict[str, Any]) -> list[dict[str, Any]]:
    """One request per (action, table) the statement touches, as the engine's analysis found them."""
    analysis = Analysis(engine.rules, engine.schema, TENANT)
    analysis.statement(parse(case["sql"]).stmts[0].stmt)
    pairs = sorted({(action, table) for action, table, _ in analysis.accesses})
    return [
        {
            "principal": 'Agent::"support-bot"',
            "action": f'Action::"{action}"',
            "resource": f'Table::"{table}"',
            "context": {},
        }
        for action, table in pairs
    ]


def _authorize_case(cedarpy: Any, requests: list[dict[str, Any]], policies: str, _: int) -> object:
    return cedarpy.is_authorized_batch(requests, policies, [])


def corpus_comparison(rounds: int, chunks: int = 4) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
    """Over the legitimate corpus, side by side and interleaved in chunks (so load drift hits every gate alike):
    Paybill cold with and without the validator, cedarpy, and the peer; then admitted counts on both corpora."""
    import cedarpy

    legitimate, adversarial = load_corpus("legitimate.jsonl"), load_corpus("adversarial.jsonl")
    engine = support_engine()
    validator, switched_off = engine.validator, _NoValidation(engine.rules, engine.schema)
    policies = cedar_support_policies(engine)
    requests = [cedar_requests(engine, case) for case in legitimate]
    peer = Peer() if PEER_PYTHON.exists() else None
    if peer is not None:
        peer.ask(op="load", name="legitimate", statements=[c["sql"] for c in legitimate])
        peer.ask(op="load", name="adversarial", statements=[c["sql"] for c in adversarial])
    samples: dict[str, list[float]] = {"paybill": [], "unvalidated": [], "cedarpy": [], "peer": []}
    try:
        for chunk in range(chunks + 1):  # chunk 0 warms every path up and is not counted
            per_chunk = 5 if chunk == 0 else max(rounds // chunks, 1)
            measured: dict[str, list[float]] = {name: [] for name in samples}
            for case, batch in zip(legitimate, requests, strict=True):
                decide = functools.partial(_decide_case, engine, case)
                engine.validator = validator
                measured["paybill"] += timed(decide, per_chunk, engine.clear_cache)
                engine.validator = switched_off
                measured["unvalidated"] += timed(decide, per_chunk, engine.clear_cache)
                engine.validator = validator
                measured["cedarpy"] += timed(functools.partial(_authorize_case, cedarpy, batch, policies), per_chunk)
            if peer is not None:
                measured["peer"] += peer.ask(op="time", name="legitimate", rounds=per_chunk)["samples"]
            if chunk:
                for name, values in measured.items():
                    samples[name] += values
        peer_admitted = (
            {name: peer.ask(op="admitted", name=name)["admitted"] for name in ("legitimate", "adversarial")}
            if peer is not None
            else {}
        )
    finally:
        engine.validator = validator
        if peer is not None:
            peer.close()
    ours = {
        "legitimate": sum(engine.decide(c["principal"], c["sql"], c.get("params"), TENANT).allowed for c in legitimate),
        "adversarial": sum(
            engine.decide(c["principal"], c["sql"], c.get("params"), TENANT).allowed for c in adversarial
        ),
    }
    base = percentiles(samples["paybill"])
    labels = {
        "paybill": "Paybill, cold, validator included (parse, analysis, rules, rewrite, deparse, validator)",
        "unvalidated": "Paybill, cold, validator switched off (the same engine, for its cost)",
        "cedarpy": "cedarpy: authorization only, the statement's (action, table) pairs in one batch",
        "peer": "postgres-mcp 0.3.0 `SafeSqlDriver._validate` (restricted mode)",
    }
    latency = []
    for name, label in labels.items():
        if not samples[name]:
            latency.append((label, "not installed", "", "", ""))
            continue
        p50, p99 = percentiles(samples[name])
        latency.append((label, f"{p50:.0f}", f"{p99:.0f}", f"{p50 / base[0]:.2f}", f"{p99 / base[1]:.2f}"))
    counts = [
        (
            "Paybill (enforce, tenant acme)",
            f"{ours['legitimate']} of {len(legitimate)}",
            f"{ours['adversarial']} of {len(adversarial)}",
        )
    ]
    if peer is not None:
        categories = collections.Counter(adversarial[n]["category"] for n in peer_admitted["adversarial"])
        top = ", ".join(f"{name} {count}" for name, count in categories.most_common(6))
        counts.append(
            (
                "postgres-mcp restricted mode",
                f"{len(peer_admitted['legitimate'])} of {len(legitimate)}",
                f"{len(peer_admitted['adversarial'])} of {len(adversarial)} ({top})",
            )
        )
    return latency, counts


def execution_rows(rounds: int, per_round: int) -> list[tuple[str, ...]]:
    directory = Path(tempfile.mkdtemp(prefix="paybill-bench-pg-"))
    os.chmod(directory, 0o755)
    server = LocalPostgres(directory, durable=False)  # throwaway benchmark data
    server.start()
    try:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            conn.execute(BASE_DDL)
            conn.execute(
                "INSERT INTO orders (id, tenant_id, customer_id, status, total) "
                "SELECT n, CASE WHEN n % 2 = 0 THEN 'acme' ELSE 'globex' END, n, 'open', n "
                "FROM generate_series(1, 10000) n"
            )
            conn.execute("ANALYZE orders")
            schema = Schema.from_ddl(BASE_DDL)
            engine = PolicyEngine(policy(10), schema)
            role = agent_role("bench", TENANT)
            apply_grants(conn, engine.rules, schema, role, TENANT, password="bench")
        dsn = psycopg.conninfo.make_conninfo(server.dsn, user=role, password="bench")
        raw = psycopg.connect(dsn, autocommit=True, cursor_factory=psycopg.RawCursor)
        raw.execute("SET statement_timeout = 2000")
        with raw, ExecutionGuard(engine, dsn, PRINCIPAL, TENANT) as guard:
            guard.engine.rules.limits.maxStatementsPerRun = 10**9
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
    return [
        ("raw psycopg", f"{raw_p50:.0f}", f"{raw_p99:.0f}", f"{raw_mean:.0f}", "1.00"),
        (
            "gated (engine + guard)",
            f"{gated_p50:.0f}",
            f"{gated_p99:.0f}",
            f"{gated_mean:.0f}",
            f"{gated_p50 / raw_p50:.2f} (p50), {gated_mean / raw_mean:.2f} (mean)",
        ),
    ]


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    from . import instructions

    runs = 500 if quick else 3000
    decisions, (work_p50, work_p99) = decision_rows(runs)
    counted = instructions.count(100, 200 if quick else instructions.DECISIONS)
    shown = f"{counted:,}" if counted is not None else "not counted (valgrind is not installed)"
    latency, counts = corpus_comparison(40 if quick else 200)
    execution = execution_rows(rounds=3 if quick else 10, per_round=300 if quick else 1000)
    return "\n".join(
        [
            "## Policy engine (issue 4)",
            "",
            f"Decision latency in µs for `{STATEMENT}` with tenant `{TENANT}` (pooled: the tenant predicate and",
            "LIMIT are injected), including parsing. *Cold*: the decision cache is cleared before every call, so",
            "each call parses (libpg_query, its tree serialized in C by `treeprotobuf`), resolves names, matches "
            "rules, rewrites (the",
            "common SELECT spliced in C) and deparses (C), then the whole-tree validator parses the final statement "
            "again (C:",
            "`treedicts` builds its dicts from libpg_query's nodes) and walks every node; *validator off* is the same",
            "engine with the validator switched off, measured interleaved, for its cost. *Cached*: the same",
            "statement with a new parameter each call (the cache is keyed by principal, tenant and statement under",
            "the policy version; parameters are type-checked on every call). cedarpy evaluates an equivalent",
            "authorization-only request (principal, action select, resource table orders) against the same number",
            "of permit/forbid policies, passed as policy text as a caller would.",
            "",
            table(
                (
                    "rules",
                    "cold p50",
                    "cold p99",
                    "cold p50, validator off",
                    "cold p99, validator off",
                    "cached p50",
                    "cached p99",
                    "cedarpy p50",
                    "cedarpy p99",
                ),
                decisions,
            ),
            "",
            "*The host's own tail*, timed interleaved with the 100-rule cold decisions: fixed work sized to the same",
            "median (a pure-Python loop that allocates nothing, so nothing in it varies between calls) took p50",
            f"{work_p50:.0f} µs and p99 {work_p99:.0f} µs. What the host adds to any computation of that length is",
            f"p99 - p50 = {work_p99 - work_p50:.0f} µs; compare the engine's cold p99 - p50 at 100 rules above.",
            "",
            f"Instructions per cold decision at 100 rules, validator included (valgrind cachegrind, `python -m "
            f"bench.instructions`; independent of load): {shown}.",
            "",
            "## The gate beside its peers, over the legitimate corpus (issue 10)",
            "",
            "Each statement of `tests/policy/legitimate.jsonl` (joins, correlated and LATERAL subqueries, CTEs,",
            "aggregates, window functions, VALUES, row locks, DML) under the 4-rule support policy, "
            "decided cold (cache",
            "cleared) with tenant `acme`, the gates measured in interleaved chunks of the same run; µs across all",
            "samples, ratios to Paybill with the validator. The peer runs in its own virtualenv (Python >= 3.12,",
            "pglast 7) behind a pipe; its samples are taken inside that process, so no pipe time is counted.",
            "",
            table(("gate", "p50", "p99", "p50 ratio", "p99 ratio"), latency),
            "",
            "Statements admitted: the legitimate corpus (the peer is read-only, so it refuses UPDATE and row locks)",
            "and the adversarial corpus (`tests/policy/adversarial.jsonl`; for the peer, the "
            "categories it admitted most):",
            "",
            table(("gate", "legitimate admitted", "adversarial admitted"), counts),
            "",
            "Gated vs raw execution of the repeated point SELECT on local PostgreSQL (10,000 rows, half per tenant),",
            "both logged in as the agent's role over loopback; µs per statement, interleaved rounds. Raw is psycopg's",
            "execute and fetchall (prepared after 5 runs); gated is the cached decision, then one round trip carrying",
            "the transaction-local statement_timeout and the statement (both prepared), under the client's deadline,",
            "its rows read one by one against maxBytesRead. The 50 ids repeat, so the EXPLAIN cost precheck (made once",
            "per statement and parameters) is cached after the first round; a statement with new parameters pays one",
            "more round trip for it:",
            "",
            table(("path", "p50", "p99", "mean", "gated/raw"), execution),
        ]
    )


if __name__ == "__main__":
    print(run())
