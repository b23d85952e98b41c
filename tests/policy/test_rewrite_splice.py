"""The rewriter's spliced path (the parser's bytes with FROM items and LIMIT replaced) writes exactly the SQL
the general path (rebuild the tree, serialize it whole) writes, and is taken for the common shape."""

from __future__ import annotations

import pytest

from paybill.policy import PolicyEngine
from paybill.policy.analysis import Analysis
from paybill.policy.decision import POLICY_CODES
from paybill.policy.rewrite import _spliced_select, rewrite
from paybill.policy.tree import DecodeError, ParseError, parse_raw

from .conftest import PRINCIPAL, load_cases, schema, support_policy

CASES = [case["sql"] for name in ("legitimate.jsonl", "adversarial.jsonl") for case in load_cases(name)]
EXTRA = [
    "SELECT id FROM orders, customers WHERE orders.id = customers.id LIMIT $1",
    "SELECT o.id FROM orders AS o LIMIT 5000",
    "SELECT 1 FROM orders o LIMIT ALL",
    "SELECT id FROM orders LIMIT 3 OFFSET 2",
    "SELECT id FROM orders FOR UPDATE",
]


def _rewritten(engine: PolicyEngine, sql: str, tenant: str | None, spliced: bool) -> str | None:
    try:
        serialized, tree = parse_raw(sql)
    except (ParseError, DecodeError, RecursionError, ValueError):  # what the engine denies before analysis
        return None
    if len(tree.stmts) != 1:
        return None
    analysis = Analysis(engine.rules, engine.schema, tenant)
    try:
        analysis.statement(tree.stmts[0].stmt)
    except Exception:  # what the engine denies as unsupported
        return None
    if any(r.code not in POLICY_CODES for r in analysis.reasons):
        return None
    return rewrite(tree, analysis, engine.rules.limits, serialized if spliced else None)


@pytest.mark.parametrize("tenant", ["acme", None])
def test_spliced_and_general_paths_write_the_same_sql(tenant: str | None) -> None:
    engine = PolicyEngine(support_policy().spec, schema())
    compared = 0
    for sql in CASES + EXTRA:
        general = _rewritten(engine, sql, tenant, spliced=False)
        if general is not None:
            assert _rewritten(engine, sql, tenant, spliced=True) == general, sql
            compared += 1
    assert compared > 100


def test_the_common_select_is_spliced_and_other_shapes_are_not() -> None:
    engine = PolicyEngine(support_policy().spec, schema())

    def spliced(sql: str) -> bool:
        serialized, tree = parse_raw(sql)
        analysis = Analysis(engine.rules, engine.schema, "acme")
        analysis.statement(tree.stmts[0].stmt)
        return _spliced_select(tree, analysis, engine.rules.limits, serialized) is not None

    assert spliced("SELECT id, status, total FROM orders WHERE id = $1")
    assert spliced("SELECT o.id, c.name FROM orders o, customers c WHERE o.customer_id = c.id")
    assert not spliced("SELECT id FROM (SELECT id FROM orders) o")  # a nested FROM item
    assert not spliced("SELECT id FROM orders WHERE id IN (SELECT id FROM orders)")  # a table in a sublink
    assert not spliced("SELECT id FROM orders JOIN customers USING (id)")  # tables inside a JOIN
    assert not spliced("SELECT id FROM orders FOR UPDATE")  # a row lock
    assert not spliced("UPDATE orders SET status = 'x' WHERE id = 1")
    assert engine.decide(PRINCIPAL, "SELECT id, status, total FROM orders WHERE id = $1", [1], "acme").sql == (
        "SELECT id, status, total FROM (SELECT id, status, total FROM orders WHERE tenant_id = 'acme') orders "
        "WHERE id = $1 LIMIT 1000"
    )
