"""The rewriter's spliced path (the parser's bytes with FROM items and LIMIT replaced) writes exactly the SQL
the general path (rebuild the tree, serialize it whole) writes, and is taken for the common shape."""

from __future__ import annotations

import pytest

from paybill.policy import PolicyEngine
from paybill.policy.analysis import Analysis
from paybill.policy.decision import POLICY_CODES
from paybill.policy.rewrite import _integer_node, _spliced_select, rewrite, shallow_splice
from paybill.policy.tree import SPLICE_SELECT, DecodeError, ParseError, parse_raw, pb

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


def _splice_inputs() -> list[tuple[bytes, dict[int, bytes], bytes, int]]:
    """Every corpus SELECT's serialized tree, with each of its top-level FROM items replaced in turn."""
    inputs = []
    limit = _integer_node(77)
    for sql in CASES + EXTRA:
        try:
            serialized, tree = parse_raw(sql)
        except (ParseError, DecodeError, RecursionError, ValueError):
            continue
        if len(tree.stmts) != 1 or not tree.stmts[0].stmt.HasField("select_stmt"):
            continue
        items = len(tree.stmts[0].stmt.select_stmt.from_clause)
        subquery = parse_raw("SELECT (SELECT 1 FROM t WHERE tenant_id = 'acme') t")[1].stmts[0].stmt
        node = subquery.select_stmt.target_list[0].res_target.val.SerializeToString()
        inputs.append((serialized, {}, limit, items))
        inputs += [(serialized, {index: node}, limit, items) for index in range(items)]
    return inputs


def test_the_c_splice_writes_the_message_the_shallow_messages_write() -> None:
    """treeprotobuf.splice_select against the pure-Python splice (shallow messages) it stands in for."""
    if SPLICE_SELECT is None:
        pytest.skip("treeprotobuf was not built")
    inputs = _splice_inputs()
    assert len(inputs) > 300
    for serialized, replaced, limit, items in inputs:
        c = SPLICE_SELECT(serialized, replaced, limit, items, pb.LIMIT_OPTION_COUNT)
        shallow = shallow_splice(serialized, replaced, limit, items, pb.LIMIT_OPTION_COUNT)
        assert c is not None and shallow is not None
        assert pb.ParseResult.FromString(c) == pb.ParseResult.FromString(shallow)
        assert SPLICE_SELECT(serialized, replaced, limit, items + 1, pb.LIMIT_OPTION_COUNT) is None


def test_the_c_splice_refuses_bytes_the_parser_never_writes() -> None:
    """Cut short anywhere, or not one SELECT: None (the general path rebuilds the tree), never a crash."""
    if SPLICE_SELECT is None:
        pytest.skip("treeprotobuf was not built")
    serialized, _, limit, items = _splice_inputs()[0]
    for cut in range(len(serialized)):
        spliced = SPLICE_SELECT(serialized[:cut], {}, limit, items, pb.LIMIT_OPTION_COUNT)
        assert spliced is None or pb.ParseResult.FromString(spliced).stmts[0].stmt.HasField("select_stmt")
    two = parse_raw("SELECT 1; SELECT 2")[0]
    update = parse_raw("UPDATE t SET a = 1")[0]
    assert SPLICE_SELECT(two, {}, limit, 0, pb.LIMIT_OPTION_COUNT) is None
    assert SPLICE_SELECT(update, {}, limit, 0, pb.LIMIT_OPTION_COUNT) is None
    with pytest.raises(TypeError):
        SPLICE_SELECT(serialized, {0: "not bytes"}, limit, items, pb.LIMIT_OPTION_COUNT)  # type: ignore[dict-item]
