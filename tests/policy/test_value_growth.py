"""Values built up through nested queries (outside review: 13 nested subqueries of `s || s || s || s` over one letter
built a 256 MiB value at an estimated cost of 8; maxCost cannot see it, and only PostgreSQL's 1 GB value limit and the
timeout stopped it). The analysis counts what each output column is built of (columns, constants and parameters read,
through every CTE, FROM subquery, LATERAL, set operation, VALUES list and scalar subquery) and refuses a statement
where one is built of more than MAX_COPIES."""

from __future__ import annotations

import psycopg
import pytest

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.policy import PolicyEngine, Schema
from paybill.policy.analysis import MAX_COPIES, Analysis
from paybill.policy.tree import parse_raw

from .conftest import PRINCIPAL, PolicyDatabase, schema, support_policy


def nested(depth: int, expression: str = "s || s || s || s", base: str = "'a'") -> str:
    inner = f"(SELECT {base} AS s) a0"
    for n in range(1, depth + 1):
        inner = f"(SELECT {expression} AS s FROM {inner}) a{n}"
    return f"SELECT s FROM {inner}"


def concatenated(name: str, count: int) -> str:
    return " || ".join([name] * count)


def params(sql: str) -> list[str]:
    return ["a"] if "$1" in sql else []


def built_of(sql: str) -> tuple[int, ...]:
    """What the analysis counts for each output column of `sql` (which must be admitted)."""
    policy = support_policy().spec
    engine = PolicyEngine(policy, schema())
    assert engine.decide(PRINCIPAL, sql, params(sql), tenant="acme").allowed, sql
    analysis = Analysis(engine.rules, engine.schema, "acme")
    analysis.statement(parse_raw(sql)[1].stmts[0].stmt)
    return analysis.output_copies


def decide(sql: str) -> list[str]:
    policy = support_policy().spec.model_dump()
    policy["rules"].append({"id": "add-orders", "effect": "allow", "actions": ["insert"], "tables": ["orders"]})
    engine = PolicyEngine(AgentPolicySpec.model_validate(policy), schema())
    return [r.code for r in engine.decide(PRINCIPAL, sql, params(sql), tenant="acme").reasons]


def test_the_outsiders_statement_is_refused_and_says_why() -> None:
    engine = PolicyEngine(support_policy().spec, schema())
    decision = engine.decide(PRINCIPAL, nested(13), tenant="acme")
    assert not decision.allowed
    ((reason,),) = [decision.reasons]
    assert reason.code == "value_growth" and reason.node == "SelectStmt", reason
    assert "column s" in reason.message and f"at most {MAX_COPIES}" in reason.message, reason.message


# Each way a value may be carried from one query into another, at MAX_COPIES (admitted) and one past it (refused):
# 8 x 8 = 64, 8 x 8 + 1 = 65 (or 5 x 13 = 65).
SHAPES = {
    "from-subquery": (
        f"SELECT {concatenated('s', 8)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q",
        f"SELECT {concatenated('s', 8)} || 'x' FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q",
    ),
    "cte": (
        f"WITH q AS (SELECT {concatenated('status', 8)} AS s FROM orders) SELECT {concatenated('s', 8)} FROM q",
        f"WITH q AS (SELECT {concatenated('status', 13)} AS s FROM orders) SELECT {concatenated('s', 5)} FROM q",
    ),
    "cte-read-by-cte": (
        f"WITH p AS (SELECT {concatenated('status', 8)} AS s FROM orders), q AS (SELECT s FROM p)"
        f" SELECT {concatenated('s', 8)} FROM q",
        f"WITH p AS (SELECT {concatenated('status', 13)} AS s FROM orders), q AS (SELECT s FROM p)"
        f" SELECT {concatenated('s', 5)} FROM q",
    ),
    "lateral": (
        f"SELECT l.t FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q,"
        f" LATERAL (SELECT {concatenated('q.s', 8)} AS t) l",
        f"SELECT l.t FROM (SELECT {concatenated('status', 13)} AS s FROM orders) q,"
        f" LATERAL (SELECT {concatenated('q.s', 5)} AS t) l",
    ),
    "scalar-subquery": (
        f"SELECT (SELECT {concatenated('s', 8)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q LIMIT 1)",
        f"SELECT (SELECT {concatenated('s', 8)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q LIMIT 1)"
        " || 'x'",
    ),
    "set-operation": (
        f"SELECT {concatenated('s', 8)} FROM (SELECT status AS s FROM orders UNION ALL"
        f" SELECT {concatenated('status', 8)} FROM orders) q",
        f"SELECT {concatenated('s', 5)} FROM (SELECT status AS s FROM orders UNION ALL"
        f" SELECT {concatenated('status', 13)} FROM orders) q",
    ),
    "values": (
        f"SELECT {concatenated('s', 8)} FROM (VALUES ('a'), ({concatenated('$1::text', 8)})) v(s)",
        f"SELECT {concatenated('s', 5)} FROM (VALUES ('a'), ({concatenated('$1::text', 13)})) v(s)",
    ),
    "star": (
        f"SELECT {concatenated('s', 8)} FROM (SELECT * FROM (SELECT {concatenated('status', 8)} AS s FROM orders) p) q",
        f"SELECT {concatenated('s', 5)} FROM"
        f" (SELECT * FROM (SELECT {concatenated('status', 13)} AS s FROM orders) p) q",
    ),
    "whole-row": (
        f"SELECT {concatenated('q::text', 8)} FROM (SELECT {concatenated('status', 4)} AS s, "
        f"{concatenated('status', 4)} AS t FROM orders) q",
        f"SELECT {concatenated('q::text', 8)} FROM (SELECT {concatenated('status', 4)} AS s, "
        f"{concatenated('status', 5)} AS t FROM orders) q",
    ),
    "renamed-columns": (
        f"SELECT {concatenated('r', 8)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q(r)",
        f"SELECT {concatenated('r', 5)} FROM (SELECT {concatenated('status', 13)} AS s FROM orders) q(r)",
    ),
    "function-arguments": (
        f"SELECT upper({concatenated('s', 8)}) FROM (SELECT lower({concatenated('status', 8)}) AS s FROM orders) q",
        f"SELECT upper({concatenated('s', 5)}) FROM (SELECT lower({concatenated('status', 13)}) AS s FROM orders) q",
    ),
}


@pytest.mark.parametrize(("at", "past"), list(SHAPES.values()), ids=list(SHAPES))
def test_each_way_a_value_is_carried_is_counted(at: str, past: str) -> None:
    assert MAX_COPIES == 64
    assert decide(at) == [], at
    assert decide(past) == ["value_growth"], past


def test_what_a_statement_writes_or_returns_is_counted_too() -> None:
    """(A single expression cannot reach the bound: some 45 nested operators are refused as too complex.)"""

    def carried(outer: int, inner: int) -> str:
        source = f"(SELECT {concatenated('status', inner)} AS s FROM orders) q"
        return f"(SELECT {concatenated('s', outer)} FROM {source} LIMIT 1)"

    for value, codes in ((carried(8, 8), []), (carried(5, 13), ["value_growth"])):
        assert decide(f"UPDATE orders SET status = {value} WHERE id = 11") == codes, value
        assert decide(f"UPDATE orders SET status = 'x' WHERE id = 11 RETURNING {value}") == codes, value
        assert decide(f"INSERT INTO orders (id, customer_id, status) VALUES (99, 1, {value})") == codes, value


def test_a_condition_or_a_choice_is_not_the_sum_of_what_it_reads() -> None:
    """A comparison or a test is one value; CASE, COALESCE and GREATEST give one of theirs; a function's window,
    order and filter build none of its value. Otherwise a long legitimate CASE would be refused."""
    labels = " ".join(f"WHEN status = 's{n}' THEN status || '{n}'" for n in range(100))
    assert built_of(f"SELECT CASE {labels} ELSE status END FROM orders") == (2,)
    assert built_of("SELECT coalesce(status, status || status, 'x') FROM orders") == (2,)
    assert built_of("SELECT status = 'a' AND total > 1 AND status IS NOT NULL AND id IN (1, 2, 3) FROM orders") == (1,)
    assert built_of("SELECT EXISTS (SELECT 1 FROM orders WHERE status || status = 'aa')") == (1,)
    assert built_of("SELECT count(status) FILTER (WHERE status || status || status = 'x') FROM orders") == (1,)
    assert built_of("SELECT total + total * total FROM orders") == (3,)  # an operator other than a test may carry
    assert built_of("SELECT count(*), now() FROM orders") == (1, 1)


def test_an_operator_that_returns_what_it_reads_is_not_a_fresh_value() -> None:
    """NULLIF gives its first operand, `-` on jsonb what is left of it: counted as a fresh value, each would start
    the count again at every second level."""
    assert decide(
        f"SELECT {concatenated('t', 5)} FROM (SELECT nullif({concatenated('status', 13)}, '') AS t FROM orders) q"
    ) == ["value_growth"]
    schema_ddl = "CREATE TABLE docs (id integer PRIMARY KEY, tenant_id text NOT NULL, doc jsonb);"
    policy = support_policy().spec.model_dump()
    policy["rules"] = [
        {"id": "read-docs", "effect": "allow", "actions": ["select"], "tables": ["docs"], "columns": ["*"]}
    ]
    engine = PolicyEngine(AgentPolicySpec.model_validate(policy), Schema.from_ddl(schema_ddl))
    sql = f"SELECT {concatenated('d', 5)} FROM (SELECT ({concatenated('doc', 13)}) - 'k' AS d FROM docs) q"
    assert [r.code for r in engine.decide(PRINCIPAL, sql, tenant="acme").reasons] == ["value_growth"]


# Statements over one-letter values, whose longest output value, in letters, the count bounds.
MEASURED = [
    nested(3),
    "WITH a0 AS (SELECT 'a' AS s), a1 AS (SELECT s || s AS s FROM a0), a2 AS (SELECT s || s || s AS s FROM a1)"
    " SELECT s || s FROM a2",
    "SELECT l.t FROM (SELECT 'a' || 'a' AS s) q, LATERAL (SELECT q.s || q.s || q.s AS t) l",
    "SELECT s || s FROM (SELECT 'a' AS s UNION ALL SELECT 'a' || 'a' || 'a') q",
    "SELECT s || s FROM (VALUES ('a'), ('a' || $1::text)) v(s)",
    "SELECT (SELECT s || s FROM (SELECT 'a' || 'a' AS s) q) || 'a'",
    "SELECT CASE WHEN s = 'a' THEN s || s ELSE s END FROM (SELECT 'aa' AS s) q",
    "SELECT coalesce(s || s || s, s) FROM (SELECT 'a' AS s) q",
    "SELECT * FROM (SELECT s || s AS s FROM (SELECT 'a' || 'a' AS s) x) y",
    "SELECT upper(lower(s || s) || s) FROM (SELECT 'a' AS s) q",
    "SELECT r || r FROM (SELECT $1::text || $1::text AS s) q(r)",
    "SELECT nullif(s || s, 'b') || s FROM (SELECT 'a' AS s) q",
]


def test_the_count_bounds_the_values_postgresql_builds(policy_db: PolicyDatabase) -> None:
    """The count is checked against PostgreSQL: over one-letter values each output is at most that many letters
    long, and where every branch is taken (concatenations only) exactly that long."""
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        for sql in MEASURED:
            counted = built_of(sql)
            rows = conn.execute(sql.replace("$1", "'a'")).fetchall()
            longest = tuple(max(len(row[n]) for row in rows) for n in range(len(counted)))
            assert all(c >= m for c, m in zip(counted, longest, strict=True)), (sql, counted, longest)
            if not any(word in sql for word in ("CASE", "coalesce", "UNION", "VALUES", "'aa'", "nullif")):
                assert counted == longest, (sql, counted, longest)
