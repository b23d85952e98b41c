"""The whole-tree validator alone (on final statements as the rewriter would hand them over) and in the engine."""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format
from pglast.parser import ParseError, parse_sql_json

from paybill.policy import PolicyEngine
from paybill.policy.analysis import Analysis, Scope
from paybill.policy.rules import RuleSet
from paybill.policy.tree import parse, pb
from paybill.policy.validate import Validator

from .conftest import PRINCIPAL, load_cases, schema, spec, support_policy

LEGITIMATE = load_cases("legitimate.jsonl")
ADVERSARIAL = load_cases("adversarial.jsonl")
ORDERS = "(SELECT id, status, total FROM orders WHERE tenant_id = 'acme') o"


@pytest.fixture(scope="module")
def validator(engine: PolicyEngine) -> Validator:
    return Validator(engine.rules, engine.schema)


def codes(validator: Validator, sql: str, tenant: str | None = "acme") -> list[str]:
    return [r.code for r in validator.validate(sql, tenant)]


# -- node types and fields --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "node"),
    [
        (f"SELECT (ARRAY[o.id, 2])[1] FROM {ORDERS}", "A_Indirection"),
        (f"SELECT x FROM {ORDERS}, generate_series(1, 2) x", "RangeFunction"),
        (f'SELECT o.status COLLATE "C" FROM {ORDERS}', "CollateClause"),
        ("SELECT xmlelement(name x)", "XmlExpr"),
        (f"SELECT GROUPING(o.id) FROM {ORDERS} GROUP BY o.id", "GroupingFunc"),
        (f"SELECT o.id FROM {ORDERS} GROUP BY ROLLUP (o.id)", "GroupingSet"),
        ("SELECT JSON_OBJECT('a': 1)", "JsonObjectConstructor"),
        ("SELECT lower(string => 'x')", "NamedArgExpr"),
        ("LISTEN orders", "ListenStmt"),
    ],
)
def test_unknown_node_types_are_denied_with_their_name(validator: Validator, sql: str, node: str) -> None:
    reasons = validator.validate(sql, "acme")
    denied = [r for r in reasons if r.code == "validator_node"]
    assert denied and denied[0].node == node and node in denied[0].message


@pytest.mark.parametrize(
    ("sql", "field"),
    [
        ("SELECT lower(VARIADIC ARRAY['a'])", "FuncCall.func_variadic"),
        ("SELECT count(*) WITHIN GROUP (ORDER BY 1)", "FuncCall.agg_within_group"),
        ("SELECT 1::int[]", "TypeName.array_bounds"),
        ("VALUES (1) ORDER BY 1 FETCH FIRST 1 ROWS WITH TIES", "SelectStmt.limit_option = LIMIT_OPTION_WITH_TIES"),
        ("SELECT 1 INTO copied", "SelectStmt.into_clause"),
        ("WITH RECURSIVE r AS (SELECT 1) SELECT 1", "WithClause.recursive"),
        (f"SELECT o.id FROM {ORDERS} GROUP BY DISTINCT o.id", "SelectStmt.group_distinct"),
        ("SELECT current_user", "SQLValueFunction.op = SVFOP_CURRENT_USER"),
        ("SELECT 'a' SIMILAR TO 'b'", "A_Expr.kind = AEXPR_SIMILAR"),
        ("SELECT ARRAY(SELECT 1)", "SubLink.sub_link_type = ARRAY_SUBLINK"),
        ("SELECT 1 WHERE 1 NOT BETWEEN SYMMETRIC 2 AND 3", "A_Expr.kind = AEXPR_NOT_BETWEEN_SYM"),
        (f"SELECT o.id FROM {ORDERS} NATURAL JOIN {ORDERS.replace(' o', ' p')}", "JoinExpr.is_natural"),
        (f"SELECT j.id FROM ({ORDERS} JOIN {ORDERS.replace(' o', ' p')} USING (id)) AS j", "JoinExpr.alias"),
        (
            "INSERT INTO orders (id, tenant_id) OVERRIDING SYSTEM VALUE VALUES (1, 'acme')",
            "InsertStmt.override = OVERRIDING_SYSTEM_VALUE",
        ),
        (
            "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme') ON CONFLICT ON CONSTRAINT orders_pkey DO NOTHING",
            "InferClause.conname",
        ),
    ],
)
def test_fields_that_change_meaning_are_denied_by_name(validator: Validator, sql: str, field: str) -> None:
    reasons = validator.validate(sql, "acme")
    messages = [r.message for r in reasons if r.code == "validator_field"]
    assert any(field in m for m in messages), reasons


# -- functions, operators, types: wherever they sit, compared as PostgreSQL resolves them ---------------------

PLACES = [
    "VALUES (1) OFFSET (SELECT {f})",
    "VALUES (1) LIMIT (SELECT {f})",
    "VALUES (1) ORDER BY {f}",
    "SELECT 1 WHERE 1 = ANY (SELECT {f})",
    "SELECT 1 WHERE EXISTS (SELECT 1 WHERE {f} IS NULL)",
    "WITH c AS (SELECT {f} AS x) SELECT 1",
    "SELECT 1 UNION SELECT {f}",
    "SELECT count(*) OVER (ORDER BY {f})",
    "SELECT count(*) OVER (ROWS {f} PRECEDING)",
    "SELECT count(*) FILTER (WHERE {f} IS NULL)",
    "SELECT count(1 ORDER BY {f})",
    "SELECT o.id FROM " + ORDERS + " GROUP BY o.id HAVING {f} IS NOT NULL",
    "SELECT o.id FROM (SELECT id FROM orders WHERE tenant_id = 'acme' AND {f} IS NULL) o",
    "SELECT o.id FROM " + ORDERS + " JOIN (SELECT id FROM customers WHERE tenant_id = 'acme') c ON {f} IS NULL",
    "UPDATE orders SET status = 'x' WHERE id = 1 AND orders.tenant_id = 'acme' RETURNING {f}",
    "UPDATE orders SET status = {f} WHERE orders.tenant_id = 'acme'",
    "SELECT CASE WHEN true THEN {f} END",
    "SELECT coalesce({f}, 'x'), greatest({f}, 1)",
    "SELECT ARRAY[{f}]",
    "SELECT lower({f})",
    "SELECT 1::numeric({f})",
    "SELECT 1 LIMIT {f}",
    "SELECT DISTINCT ON ({f}) 1",
]
NEVER = [
    "pg_sleep(1)",
    "set_config('statement_timeout', '0', false)",
    "pg_catalog.pg_advisory_lock(1)",
    "lo_from_bytea(0, 'x')",
    "PG_NOTIFY('c', 'x')",
]
NOT_LISTED = ["md5('x')", "\"LOWER\"('x')", "public.lower('x')"]


@pytest.mark.parametrize("place", PLACES)
def test_functions_outside_the_allowlist_are_denied_wherever_they_sit(validator: Validator, place: str) -> None:
    for function in NEVER:
        assert "validator_function" in codes(validator, place.format(f=function)), (place, function)
    for function in NOT_LISTED:
        found = codes(validator, place.format(f=function))
        assert {"validator_function", "function_not_allowed"} & set(found), (place, function)
    assert codes(validator, place.format(f="lower('x')")) == [], place


def test_unsafe_prefixes_are_denied_even_when_the_policy_lists_them() -> None:
    listed = ["has_table_privilege", "to_regclass", "txid_current", "binary_upgrade_set_next_pg_type_oid"]
    lenient = Validator(RuleSet(spec(functions=["lower", *listed])), schema())
    for call in (
        "has_table_privilege('orders', 'select')",
        "to_regclass('orders')",
        "txid_current()",
        "binary_upgrade_set_next_pg_type_oid(1)",
    ):
        assert codes(lenient, f"SELECT {call}") == ["validator_function"], call


@pytest.mark.parametrize(
    ("sql", "admitted"),
    [
        ("SELECT lower('x'), LOWER('x'), \"lower\"('x'), pg_catalog.lower('x')", True),
        ("SELECT \"LOWER\"('x')", False),
        ("SELECT \"Lower\"('x')", False),
        ("SELECT 1::text, CAST(1 AS integer), 1::\"text\", interval '1 day', 1::numeric(12, 2), 'x'::varchar(3)", True),
        ("SELECT CURRENT_TIMESTAMP(3), LOCALTIME, CURRENT_DATE", True),
        ('SELECT CAST(1 AS "TEXT")', False),
        ('SELECT 1::"INT4"', False),
        ("SELECT 1::regclass", False),
        ("SELECT 'x'::pg_catalog.regproc", False),
        ("SELECT '1'::public.text", False),
        ("SELECT 1::oid", False),
    ],
)
def test_names_are_compared_case_sensitively(validator: Validator, sql: str, admitted: bool) -> None:
    assert (codes(validator, sql) == []) is admitted, codes(validator, sql)


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT 1 WHERE 'a' ~ 'b'",
        "SELECT 1 WHERE 'a' !~* 'b'",
        "SELECT 1 WHERE 'a' ^@ 'b'",
        "SELECT 1 WHERE 'a' ~ ANY (SELECT 'b')",
        "SELECT 1 WHERE 'a' !~* ALL (SELECT 'b')",
        "SELECT 1 WHERE 'a' OPERATOR(pg_catalog.~) ANY (SELECT 'b')",
        "SELECT 1 WHERE 'a' ~ ANY (ARRAY['b'])",
        "SELECT 1 WHERE 1 OPERATOR(pg_catalog.=) 1",
        "SELECT 1 WHERE 1 OPERATOR(public.===) 1",
        "SELECT 1 WHERE 1 = ANY (SELECT 1 ORDER BY 1 USING ~<~)",
        "VALUES ('a') ORDER BY 1 USING ~>~",
        "VALUES (1) ORDER BY 1 USING OPERATOR(pg_catalog.<)",
        "SELECT count(1 ORDER BY 1 USING @>)",
    ],
)
def test_operators_outside_the_allowlist_are_denied_wherever_they_sit(validator: Validator, sql: str) -> None:
    assert "validator_operator" in codes(validator, sql)


def test_admitted_operators_pass(validator: Validator) -> None:
    sql = (
        "SELECT 1 WHERE 1 = ANY (SELECT 1) AND 'a' ~~ 'b' AND 'a' NOT ILIKE 'b' AND 1 BETWEEN 0 AND 2 "
        "AND 1 NOT BETWEEN 2 AND 3 AND 1 IN (1, 2) AND 1 IS DISTINCT FROM 2 AND -1 < 0 "
        "ORDER BY 1 USING <"
    )
    assert codes(validator, sql) == []


# -- relations: only where the rewriter put them, with the filter the policy requires -------------------------


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT id FROM orders",
        "SELECT o.id FROM (SELECT id FROM orders WHERE tenant_id = 'globex') o",
        "SELECT o.id FROM (SELECT id FROM orders WHERE tenant_id = 'acme' OR true) o",
        "SELECT o.id FROM (SELECT id FROM orders WHERE NOT tenant_id <> 'acme' OR id > 0) o",
        "SELECT o.id FROM (SELECT id FROM orders WHERE tenant_id = 'acme' || '') o",
        "SELECT o.id FROM (SELECT id FROM orders WHERE tenant_id::text = 'acme') o",
        # a column alias renames name to tenant_id: the agent's own "tenant filter" would compare names
        "SELECT c.id FROM (SELECT id FROM customers AS x (id, name, tenant_id) WHERE tenant_id = 'acme') c",
        "SELECT c.id FROM (SELECT c.id FROM customers c JOIN orders o ON true WHERE tenant_id = 'acme') c",
        "SELECT c.id FROM (SELECT id FROM customers, orders WHERE tenant_id = 'acme') c",
        "SELECT o.id FROM " + ORDERS + " WHERE EXISTS (SELECT 1 FROM customers)",
        "SELECT o.id FROM " + ORDERS + " WHERE o.id IN (SELECT id FROM secrets WHERE tenant_id = 'globex')",
        "WITH x AS (SELECT id FROM orders) SELECT id FROM x",
        # a CTE's own name inside its body is the base table, not the CTE
        "WITH orders AS (SELECT id FROM orders) SELECT id FROM orders",
        "SELECT r.id FROM (SELECT oid AS id FROM pg_catalog.pg_roles WHERE tenant_id = 'acme') r",
        "SELECT o.id FROM (SELECT id FROM public.nowhere WHERE tenant_id = 'acme') o",
        "SELECT o.id FROM (SELECT id FROM other.orders WHERE tenant_id = 'acme') o",
        "UPDATE orders SET status = 'x' WHERE id = 1",
        "UPDATE orders SET status = 'x' WHERE orders.tenant_id = 'globex'",
        "UPDATE orders SET status = 'x' WHERE id = 1 OR orders.tenant_id = 'acme'",
        "UPDATE orders SET status = 'x' WHERE NOT (orders.tenant_id = 'acme')",
        "UPDATE orders SET status = 'x' FROM customers WHERE orders.tenant_id = 'acme'",
        "DELETE FROM orders WHERE orders.tenant_id = 'acme' AND id IN (SELECT id FROM orders)",
        "DELETE FROM orders",
        "INSERT INTO orders (id, status) VALUES (1, 'x')",
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'globex')",
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme'), (2, 'globex')",
        "INSERT INTO orders (id, tenant_id) SELECT id, tenant_id FROM " + ORDERS.replace("status, total", "tenant_id"),
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme') ON CONFLICT (id) DO UPDATE SET status = 'x'",
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme') ON CONFLICT (id) DO UPDATE SET status = 'x' "
        "WHERE orders.tenant_id = 'globex'",
        "SELECT o.id FROM " + ORDERS + " FOR UPDATE OF secrets.o",
    ],
)
def test_relations_the_rewriter_did_not_filter_are_denied(validator: Validator, sql: str) -> None:
    found = codes(validator, sql)
    assert "validator_relation" in found, found


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT o.id FROM " + ORDERS,
        "SELECT o.id FROM (SELECT id FROM orders WHERE tenant_id = 'acme' AND id > 3) o",
        "SELECT o.id FROM (SELECT id FROM orders WHERE id > 3 AND (tenant_id = 'acme' AND total > 1)) o",
        "WITH orders AS (SELECT 1 AS id) SELECT id FROM orders",
        "WITH a AS (SELECT 1 AS id), b AS (SELECT id FROM a) SELECT b.id FROM b JOIN a ON a.id = b.id",
        "WITH x AS (SELECT o.id FROM " + ORDERS + ") SELECT id FROM x WHERE id IN (SELECT id FROM x)",
        "SELECT o.id FROM " + ORDERS + " FOR UPDATE OF o",
        "UPDATE orders SET status = 'x' WHERE (id = 1 OR id = 2) AND orders.tenant_id = 'acme'",
        "UPDATE orders o SET status = 'x' WHERE o.id = 1 AND o.tenant_id = 'acme' RETURNING o.id",
        "DELETE FROM orders WHERE orders.tenant_id = 'acme'",
        "INSERT INTO orders (id, tenant_id) VALUES (1, 'acme'), (2, 'acme')",
        "INSERT INTO orders AS t (id, tenant_id) VALUES (1, 'acme') ON CONFLICT (id) DO UPDATE SET status = 'x' "
        "WHERE t.total > 1 AND t.tenant_id = 'acme'",
    ],
)
def test_relations_with_the_required_filter_pass(validator: Validator, sql: str) -> None:
    """Structural: a statement an agent writes in exactly the filtered shape is a filtered statement."""
    assert codes(validator, sql) == []


def test_without_a_tenant_a_table_without_row_filters_needs_no_wrapper(validator: Validator) -> None:
    assert codes(validator, "SELECT id FROM orders", tenant=None) == []
    assert codes(validator, "UPDATE orders SET status = 'x' WHERE id = 1", tenant=None) == []
    assert "validator_relation" in codes(validator, "SELECT oid FROM pg_class", tenant=None)


def test_row_filters_are_required_wherever_the_table_is_read() -> None:
    rules = [
        {
            "id": "open-orders",
            "effect": "allow",
            "actions": ["select", "update"],
            "tables": ["orders"],
            "rowFilter": "status <> 'canceled' AND total < 1000 OR paid",
        }
    ]
    engine = PolicyEngine(spec(rules=rules), schema())
    validator = Validator(engine.rules, engine.schema)
    for sql in ("SELECT id FROM orders WHERE id = 1", "UPDATE orders SET status = 'x' WHERE id = 1"):
        decision = engine.decide(PRINCIPAL, sql, tenant="acme")
        assert decision.allowed, decision.reasons
        assert validator.validate(decision.sql, "acme") == []
        assert engine.decide(PRINCIPAL, sql).allowed  # no tenant: the row filter alone
    assert "validator_relation" in codes(validator, "SELECT o.id FROM " + ORDERS)
    assert "validator_relation" in codes(validator, "UPDATE orders SET status = 'x' WHERE orders.tenant_id = 'acme'")


# -- the validator in the engine ----------------------------------------------------------------------------------


class ForgetsOrderBy(Analysis):
    """The clause walker with ORDER BY forgotten: nothing in it is checked (a subclass of the compiled class)."""

    def sort(self, sort: pb.SortBy, scope: Scope, outputs: tuple[str, ...] = ()) -> None:
        return None


@pytest.mark.parametrize("case", LEGITIMATE, ids=[c["id"] for c in LEGITIMATE])
def test_every_legitimate_statement_is_still_admitted(engine: PolicyEngine, validator: Validator, case: dict) -> None:
    decision = engine.decide(case["principal"], case["sql"], case.get("params"), tenant="acme")
    assert decision.allowed, decision.reasons
    assert validator.validate(decision.sql, "acme") == []


def test_every_adversarial_statement_is_still_denied(engine: PolicyEngine) -> None:
    admitted = [
        case["id"]
        for case in ADVERSARIAL
        if engine.decide(case["principal"], case["sql"], case.get("params"), tenant="acme").allowed
    ]
    assert admitted == []


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT id FROM orders ORDER BY pg_sleep(1)", "validator_function"),
        ("SELECT id FROM orders ORDER BY md5(status)", "function_not_allowed"),
        ("SELECT id FROM orders ORDER BY id USING ~<~", "validator_operator"),
        ("SELECT id FROM orders ORDER BY (SELECT count(*) FROM secrets)", "validator_relation"),
        (
            "SELECT id FROM orders ORDER BY (SELECT length(set_config('statement_timeout', '0', false)))",
            "validator_function",
        ),
        ("SELECT id FROM orders ORDER BY id::regclass", "validator_type"),
    ],
)
def test_a_clause_the_analysis_forgets_is_still_denied(sql: str, code: str) -> None:
    """The design change: were ORDER BY forgotten by the clause walker, the validator would still deny."""
    engine = PolicyEngine(support_policy().spec, schema(), analysis=ForgetsOrderBy)
    decision = engine.decide(PRINCIPAL, sql, tenant="acme")
    assert not decision.allowed and decision.sql is None
    assert code in [r.code for r in decision.reasons]


def test_validator_reasons_deny_in_every_mode_but_policy_ones_only_in_enforce() -> None:
    warn = PolicyEngine(spec(mode="warn"), schema(), analysis=ForgetsOrderBy)
    assert not warn.decide(PRINCIPAL, "SELECT id FROM orders ORDER BY pg_sleep(1)", tenant="acme").allowed
    recorded = warn.decide(PRINCIPAL, "SELECT id FROM orders ORDER BY md5('x')", tenant="acme")
    assert recorded.allowed and [r.code for r in recorded.reasons] == ["function_not_allowed"]


# -- what the validator walks is the parse tree ---------------------------------------------------------------


def test_the_validators_json_tree_is_the_protobuf_parse_tree() -> None:
    """libpg_query's JSON output of a statement holds the same tree as its protobuf output (fields the protobuf
    descriptors do not know are ignored here; the validator denies them)."""
    compared = 0
    for case in LEGITIMATE + ADVERSARIAL:
        try:
            tree = json.loads(parse_sql_json(case["sql"]))
        except ParseError:
            continue
        if "\x00" in case["sql"]:  # refused before parsing (pglast's own parser stops at it)
            continue
        expected = parse(case["sql"])
        expected.DiscardUnknownFields()
        assert json_format.ParseDict(tree, pb.ParseResult(), ignore_unknown_fields=True) == expected
        compared += 1
    assert compared > 400


def test_a_field_the_descriptors_do_not_know_is_denied(validator: Validator) -> None:
    """A libpg_query newer than the descriptors may add a field: unknown means denied, never skipped."""
    tree = json.loads(parse_sql_json("SELECT 1"))
    assert validator.check(tree, "acme") == []
    tree["stmts"][0]["stmt"]["SelectStmt"]["targetList"][0]["ResTarget"]["future_option"] = True
    reasons = validator.check(tree, "acme")
    assert [r.code for r in reasons] == ["validator_field"]
    assert "ResTarget.future_option (unknown to the descriptors)" in reasons[0].message
