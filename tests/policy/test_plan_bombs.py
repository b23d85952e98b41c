"""Statements short to write and exponential to plan (outside review: one such statement of about 800 characters,
admitted, took a PostgreSQL backend to 20 GB during planning and the shared server down with it). PostgreSQL
inlines a CTE or a FROM subquery into the query that reads it, so a column the next level reads twice doubles the
expression at each level; planning checks for interrupts too rarely for the statement timeout to stop it, and the
guard's own EXPLAIN (the cost check) plans it first. The rewrite fences every CTE and FROM subquery the agent wrote
(MATERIALIZED; OFFSET 0), so each level is planned once, alone."""

from __future__ import annotations

import re

import psycopg
import pytest

from paybill.policy import PolicyEngine
from paybill.policy.analysis import MAX_COPIES, Analysis
from paybill.policy.rules import RuleSet
from paybill.policy.schema import Schema

from .conftest import PRINCIPAL, PolicyDatabase, schema, support_policy


def cte_bomb(depth: int) -> str:
    levels = [f"a{n} AS (SELECT s || s AS s FROM a{n - 1})" for n in range(1, depth + 1)]
    return f"WITH a0 AS (SELECT status AS s FROM orders), {', '.join(levels)} SELECT count(s) FROM a{depth}"


def subquery_bomb(depth: int) -> str:
    inner = "(SELECT status AS s FROM orders) a0"
    for n in range(1, depth + 1):
        inner = f"(SELECT s || s AS s FROM {inner}) a{n}"
    return f"SELECT count(s) FROM {inner}"


def lateral_bomb(depth: int) -> str:
    inner = "(SELECT o.id, o.status AS s FROM orders o) a0"
    for n in range(1, depth + 1):
        inner = f"(SELECT id, s || s AS s FROM {inner}) a{n}"
    return f"SELECT count(*) FROM orders, LATERAL (SELECT s FROM {inner} WHERE a{depth}.id = orders.id) l"


BOMBS = [
    pytest.param(cte_bomb, id="ctes"),
    pytest.param(subquery_bomb, id="from-subqueries"),
    pytest.param(lateral_bomb, id="lateral"),
]


class _UnboundedCopies(Analysis):
    """The analysis without its bound on values built through nested queries (analysis.MAX_COPIES), which refuses
    these bombs past six levels: the fences are the second defence, shown here on their own."""

    def __init__(self, rules: RuleSet, schema: Schema, tenant: str | None) -> None:
        super().__init__(rules, schema, tenant)
        self.max_copies = self.max_row_copies = self.max_products = self.max_numeric_work = 1 << 40


@pytest.mark.parametrize("bomb", BOMBS)
def test_every_cte_and_from_subquery_the_agent_wrote_is_fenced(bomb: object) -> None:
    engine = PolicyEngine(support_policy().spec, schema(), analysis=_UnboundedCopies)
    decision = engine.decide(PRINCIPAL, bomb(12), tenant="acme")  # type: ignore[operator]
    assert decision.allowed and decision.sql is not None, decision.reasons
    assert fences(decision.sql) >= 13, decision.sql  # a0 .. a12
    deeper = engine.decide(PRINCIPAL, bomb(22), tenant="acme")  # type: ignore[operator]
    assert not deeper.allowed or fences(deeper.sql or "") >= 23  # refused as too deep, or fenced all the same


@pytest.mark.parametrize("bomb", BOMBS)
def test_a_bomb_is_refused_once_its_value_is_built_of_more_than_max_copies(bomb: object) -> None:
    """Each level doubles the value: six levels build it of 64 columns read, seven of 128."""
    assert MAX_COPIES == 64
    engine = PolicyEngine(support_policy().spec, schema())
    assert engine.decide(PRINCIPAL, bomb(6), tenant="acme").allowed  # type: ignore[operator]
    refused = engine.decide(PRINCIPAL, bomb(7), tenant="acme")  # type: ignore[operator]
    assert [r.code for r in refused.reasons] == ["value_growth"] and "128" in refused.reasons[0].message


def fences(sql: str) -> int:
    return len(re.findall(r"AS MATERIALIZED \(", sql)) + len(re.findall(r"OFFSET 0\)", sql))


def test_a_subquery_with_its_own_limit_or_offset_keeps_it() -> None:
    engine = PolicyEngine(support_policy().spec, schema())
    sql = "SELECT x.id FROM (SELECT id FROM orders ORDER BY id LIMIT 5 OFFSET 2) x"
    decided = engine.decide(PRINCIPAL, sql, tenant="acme").sql
    assert decided is not None and "LIMIT 5 OFFSET 2" in decided and "OFFSET 0" not in decided


@pytest.mark.parametrize("bomb", BOMBS[:2])  # PostgreSQL 15 keeps this LATERAL subquery apart anyway
def test_the_final_statement_plans_in_linear_size(policy_db: PolicyDatabase, bomb: object) -> None:
    """At 12 levels (safe either way: 4,096 copies unfenced; a column, not a constant, which would be folded) the
    plan PostgreSQL makes of what the engine lets run stays small; the statement as written, planned, does not."""
    engine = PolicyEngine(support_policy().spec, schema(), analysis=_UnboundedCopies)
    decision = engine.decide(PRINCIPAL, bomb(12), tenant="acme")  # type: ignore[operator]
    assert decision.allowed and decision.sql is not None, decision.reasons
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:

        def plan_size(sql: str) -> int:
            rows = conn.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {sql}").fetchall()
            return sum(len(row[0]) for row in rows)

        fenced, written = plan_size(decision.sql), plan_size(bomb(12))  # type: ignore[operator]
    assert fenced < 20_000 and written > 10 * fenced, (fenced, written)
