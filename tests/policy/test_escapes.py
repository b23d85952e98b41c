"""Regression tests for the escapes of issue 10 (findings 1 to 6) in the clause-aware analysis and rewrite.

Each test names the finding it closes. The database side of findings 3 and 5 is in test_database.py."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from paybill.api.agentworkflow import Step
from paybill.database.agents.catalog import read_schema
from paybill.database.server import LocalPostgres
from paybill.policy import PolicyEngine
from paybill.policy.analysis import SELECT_FIELDS, SET_OPERATION_FIELDS, VALUES_FIELDS, Analysis, restricts
from paybill.policy.decision import Reason
from paybill.policy.rules import PolicyError
from paybill.policy.schema import Schema, SchemaError
from paybill.policy.tree import parse, pb, set_integer
from paybill.workflows.admission import step_problems
from paybill.workflows.reconcile import awaits_approval
from paybill.workflows.run import StepOutcome

from .conftest import PRINCIPAL, schema, spec, support_policy


def rules_with(*extra: dict) -> list[dict]:
    return [*support_policy().spec.model_dump(mode="json")["rules"], *extra]


def refused_with(engine: PolicyEngine, sql: str, code: str, named: str) -> None:
    """Denied, with a reason of `code` whose message or rule names `named`."""
    decision = engine.decide(PRINCIPAL, sql, tenant="acme")
    assert not decision.allowed and decision.sql is None, (sql, decision.sql)
    reasons = [(r.code, r.message, r.rule) for r in decision.reasons]
    assert any(c == code and (named in m or named == rule) for c, m, rule in reasons), reasons


# -- finding 1: everything after a VALUES list is checked, at every level ----------------------------------

SMUGGLED = "(SELECT length(set_config('statement_timeout', '0', false)))"
AFTER_VALUES = [
    f"VALUES (1) OFFSET {SMUGGLED}",
    f"VALUES (1) LIMIT {SMUGGLED}",
    f"VALUES (1) ORDER BY {SMUGGLED}",
    f"VALUES (1) FETCH FIRST {SMUGGLED} ROWS ONLY",
    f"SELECT * FROM (VALUES (1) OFFSET {SMUGGLED}) v",
    f"WITH v AS (VALUES (1) LIMIT {SMUGGLED}) SELECT * FROM v",
    f"SELECT id FROM orders WHERE id IN (VALUES (1) ORDER BY {SMUGGLED})",
    f"SELECT id FROM orders WHERE EXISTS (VALUES (1) OFFSET {SMUGGLED})",
    f"SELECT (VALUES (1) LIMIT {SMUGGLED}) FROM orders",
    f"SELECT 1 UNION (VALUES (1) OFFSET {SMUGGLED})",
    f"(VALUES (1) LIMIT {SMUGGLED}) UNION ALL SELECT 2",
    f"SELECT * FROM (SELECT * FROM (VALUES (1) LIMIT 1 OFFSET {SMUGGLED}) a) b",
]


@pytest.mark.parametrize("sql", AFTER_VALUES)
def test_clauses_after_values_are_checked(engine: PolicyEngine, sql: str) -> None:
    refused_with(engine, sql, "unsafe_function", "set_config")


def test_insert_values_admits_nothing_after_the_list() -> None:
    insert = {"id": "add-orders", "effect": "allow", "actions": ["insert"], "tables": ["orders"]}
    engine = PolicyEngine(spec(rules=rules_with(insert)), schema())
    head = "INSERT INTO orders (id, customer_id, status, total) VALUES (1, 2, 'x', 3)"
    assert engine.decide(PRINCIPAL, head, tenant="acme").allowed
    refused_with(engine, f"{head} LIMIT (SELECT pg_sleep(1)::int)", "unsafe_function", "pg_sleep")
    refused_with(engine, f"{head} OFFSET 1", "unsupported", "limit_offset")
    refused_with(engine, f"{head} ORDER BY 1", "unsupported", "sort_clause")


def test_a_select_field_the_walker_does_not_handle_is_a_denial(engine: PolicyEngine) -> None:
    """Deny by default: a field set on a SelectStmt that its branch does not handle names itself in the reason."""
    for sql, field in (
        ("VALUES (1)", "where_clause"),
        ("VALUES (1)", "group_clause"),
        ("SELECT 1 UNION SELECT 2", "having_clause"),
        ("SELECT 1 UNION SELECT 2", "from_clause"),
    ):
        tree = parse(sql)
        select = tree.stmts[0].stmt.select_stmt
        extra = getattr(select, field)
        set_integer(extra.add() if hasattr(extra, "add") else extra, 1)
        analysis = Analysis(engine.rules, engine.schema, "acme")
        analysis.statement(tree.stmts[0].stmt)
        assert [(r.code, r.node) for r in analysis.reasons] == [("unsupported", "SelectStmt")], field
        assert field in analysis.reasons[0].message


# -- finding 2: every operator name is checked wherever it stands -------------------------------------------


@pytest.mark.parametrize(
    ("sql", "operator"),
    [
        ("SELECT id FROM orders WHERE status ~ ANY (SELECT name FROM customers)", "~"),
        ("SELECT id FROM orders WHERE status !~* ALL (SELECT name FROM customers)", "!~*"),
        ("SELECT id FROM orders WHERE status ^@ ANY (SELECT name FROM customers)", "^@"),
        ("SELECT id FROM orders WHERE status OPERATOR(pg_catalog.~) ANY (SELECT name FROM customers)", "pg_catalog.~"),
        ("SELECT id FROM orders WHERE status OPERATOR(public.===) ANY (SELECT name FROM customers)", "public.==="),
        ("SELECT id FROM orders ORDER BY status USING ~<~", "~<~"),
        ("SELECT id FROM orders ORDER BY id USING OPERATOR(public.===)", "public.==="),
        ("SELECT id FROM orders ORDER BY id USING OPERATOR(pg_catalog.<)", "pg_catalog.<"),
        ("SELECT id, sum(total) OVER (ORDER BY status USING ~>~) FROM orders", "~>~"),
        ("SELECT max(id ORDER BY status USING ~<=~) FROM orders", "~<=~"),
        ("SELECT id FROM orders o WHERE EXISTS (SELECT 1 FROM customers c ORDER BY c.name USING ~>=~)", "~>=~"),
        ("SELECT id FROM orders WHERE status ~ 'x'", "~"),
        ("SELECT id FROM orders WHERE status ^@ 'o'", "^@"),
    ],
)
def test_operators_are_checked_in_sublinks_and_using(engine: PolicyEngine, sql: str, operator: str) -> None:
    refused_with(engine, sql, "operator_not_allowed", operator)


def test_allowed_operators_still_pass_in_sublinks_and_using(engine: PolicyEngine) -> None:
    for sql in (
        "SELECT id FROM orders WHERE customer_id = ANY (SELECT id FROM customers)",
        "SELECT id FROM orders WHERE total > ALL (SELECT total FROM orders WHERE paid)",
        "SELECT id FROM orders ORDER BY id USING >",
    ):
        decision = engine.decide(PRINCIPAL, sql, tenant="acme")
        assert decision.allowed, (sql, decision.reasons)


# -- finding 3: a row lock is a write intent ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "code", "named"),
    [
        ("SELECT id FROM customers WHERE id = 1 FOR UPDATE", "no_allow_rule", "update on customers"),
        (
            "SELECT o.id FROM orders o JOIN customers c ON c.id = o.customer_id WHERE o.id = 1 FOR NO KEY UPDATE",
            "no_allow_rule",
            "update on customers",
        ),
        # finding 3 of the second review: a lock through a derived table locks rows the guard never counts
        ("SELECT * FROM (SELECT id FROM customers) c FOR UPDATE", "unsupported", "subquery"),
        ("SELECT * FROM (SELECT id FROM customers) c FOR KEY SHARE OF c", "unsupported", "subquery"),
        ("SELECT * FROM (SELECT * FROM (SELECT id FROM customers) a) b FOR SHARE", "unsupported", "subquery"),
        ("WITH c AS (SELECT id FROM customers) SELECT * FROM c FOR UPDATE", "unsupported", "CTE"),
        ("WITH c AS (SELECT 1) SELECT id FROM orders WHERE id = 1 FOR UPDATE", "unsupported", "WITH"),
        (
            "SELECT o.id FROM orders o JOIN (SELECT id FROM customers) c ON c.id = o.customer_id WHERE o.id = 1 "
            "FOR NO KEY UPDATE OF o",
            "unsupported",
            "subquery",
        ),
        (
            "SELECT id FROM (SELECT id FROM orders WHERE id > 0 LIMIT 1000) s ORDER BY id DESC LIMIT 1 FOR UPDATE",
            "unsupported",
            "subquery",
        ),
        ("SELECT o.id FROM (SELECT id FROM orders WHERE id = 11) o FOR SHARE", "unsupported", "subquery"),
        (
            "SELECT id FROM orders, LATERAL generate_series(1, 3) g WHERE id = 1 FOR UPDATE OF orders",
            "set_returning_function",
            "FROM",
        ),
        ("SELECT DISTINCT status FROM orders WHERE id = 1 FOR UPDATE", "unsupported", "DISTINCT"),
        ("SELECT status FROM orders WHERE id = 1 GROUP BY status FOR UPDATE", "unsupported", "GROUP BY"),
        ("SELECT count(*) FROM orders WHERE id = 1 FOR UPDATE", "unsupported", "aggregate"),
        ("SELECT 1 FROM orders WHERE id = 1 HAVING true FOR UPDATE", "unsupported", "HAVING"),
        ("SELECT row_number() OVER () FROM orders WHERE id = 1 FOR UPDATE", "unsupported", "window"),
        ("WITH c AS (SELECT id FROM orders WHERE id = 1 FOR UPDATE) SELECT * FROM c", "unsupported", "row lock"),
        (
            "SELECT id FROM orders WHERE id IN (SELECT id FROM orders WHERE id = 1 FOR UPDATE)",
            "unsupported",
            "row lock",
        ),
        ("SELECT * FROM (SELECT id FROM orders WHERE id = 1 FOR SHARE) o", "unsupported", "row lock"),
        ("SELECT id FROM orders FOR UPDATE", "require_where", "fix-status"),
        ("SELECT id FROM orders WHERE paid >= false FOR UPDATE", "require_where", "fix-status"),
        ("SELECT id FROM orders WHERE id = id FOR KEY SHARE", "require_where", "fix-status"),
        ("SELECT id FROM orders o FOR UPDATE OF o", "require_where", "fix-status"),
        ("SELECT id FROM orders WHERE id = 1 FOR UPDATE OF nowhere", "unknown_table", "nowhere"),
        ("VALUES (1) FOR UPDATE", "unsupported", "row lock"),
        ("SELECT id FROM orders WHERE total > 0 ORDER BY id LIMIT 2 OFFSET 15 FOR UPDATE", "unsupported", "OFFSET"),
        (
            "SELECT id FROM orders WHERE id = 1 UNION SELECT id FROM orders WHERE id = 2 FOR UPDATE",
            "unsupported",
            "row lock",
        ),
    ],
)
def test_row_locks_need_an_update_rule_on_every_locked_table(
    engine: PolicyEngine, sql: str, code: str, named: str
) -> None:
    refused_with(engine, sql, code, named)


def test_an_admitted_row_lock_is_bounded_by_max_rows_written(engine: PolicyEngine) -> None:
    decision = engine.decide(PRINCIPAL, "SELECT id FROM orders WHERE id = 10 FOR UPDATE", tenant="acme")
    assert decision.allowed, decision.reasons
    assert decision.extra == {"locks": True}
    assert decision.sql == (
        "SELECT id FROM (SELECT id FROM orders WHERE tenant_id = 'acme') orders WHERE id = 10 LIMIT 11 FOR UPDATE"
    )
    joined = engine.decide(
        PRINCIPAL,
        "SELECT o.id FROM orders o JOIN orders p ON p.id = o.id WHERE o.id = 10 AND p.id = 10 FOR SHARE",
        tenant="acme",
    )
    assert joined.allowed and joined.extra == {"locks": True}, joined.reasons
    assert engine.decide(PRINCIPAL, "SELECT id FROM orders", tenant="acme").extra == {}


# -- finding 4: requireWhere needs a WHERE that filters the target's rows ----------------------------------

ORDERS = schema().tables["orders"]


def where_of(condition: str) -> pb.Node:
    return parse(f"UPDATE orders o SET status = 'x' WHERE {condition}").stmts[0].stmt.update_stmt.where_clause


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("id = 1", True),
        ("1 = id", True),
        ("o.id = $1", True),
        ("id IN (1, 2)", True),
        ("id = ANY($1)", True),
        ("id BETWEEN 1 AND 5", True),
        ("total >= 10 AND total <= 20", True),
        ("total > 10 AND paid AND total < 20.5", True),
        ("(id >= 1 AND id <= 5) OR id = 9", True),
        ("created_at BETWEEN '2026-01-01' AND '2026-02-01'", True),
        ("status LIKE 'op%'", True),
        ("status ILIKE 'x'", True),
        ("id = '7'::int", True),
        ("id = 1 AND id = id", True),
        ("paid AND id = 3", True),
        ("id = 1 OR id = 2", True),
        ("(id = 1 OR status = 'x') AND paid", True),
        ("id = 1 OR (id = 2 AND paid)", True),
        ("id = id", False),
        ("tenant_id = tenant_id", False),
        ("tenant_id = 'acme'", False),
        ("id IS NOT NULL", False),
        ("EXISTS (SELECT 1 FROM customers)", False),
        ("true", False),
        ("2 > 1", False),
        ("id <> 1", False),
        ("id != 1", False),
        ("NOT (id = 1)", False),
        ("id NOT IN (1)", False),
        ("id NOT BETWEEN 1 AND 2", False),
        ("status NOT LIKE 'x'", False),
        ("status LIKE '%'", False),
        ("status LIKE '%%_'", False),
        ("paid", False),
        ("id = 1 OR true", False),
        ("id = 1 OR id = id", False),
        ("id = 1 OR paid", False),
        ("c.id = 1", False),
        ("nope = 1", False),
        ("id = (SELECT 1)", False),
        ("id = customer_id", False),
        ("id = NULL", False),
        ("status LIKE $1", False),
        ("status ILIKE $1", False),
        ("status LIKE $1::text", False),
        ("id IN (1, id)", False),
        ("lower(status) = 'x'", False),
        ("id IS DISTINCT FROM 1", False),
        ("id = 1 + 0", False),
        ("id = 1::int + id", False),
        ("o.o.id = 1", False),
        ("id IN (SELECT 1)", False),
        # outside review F2: one-sided ranges, complementary ORs, booleans and open-ended ranges select every row
        ("total >= 10", False),
        ("total < 5.5", False),
        ("status >= ''", False),
        ("paid >= false", False),
        ("created_at > '-infinity'", False),
        ("id >= 0 OR id < 0", False),
        ("id = 1 OR id > 0", False),
        ("total >= 10 AND id <= 20", False),
        ("id >= 1 AND (id <= 5 OR paid)", False),
        ("total >= 10 AND total >= 20", False),
        ("paid = true", False),
        ("paid = true OR paid = false", False),
        ("paid IN (true, false)", False),
        ("paid = ANY($1)", False),
        ("paid BETWEEN false AND true", False),
        ("created_at BETWEEN '-infinity' AND 'infinity'", False),
        ("created_at >= '-infinity'::timestamptz AND created_at <= 'Infinity'", False),
        ("status LIKE '%a'", False),
        ("status LIKE '_%'", False),
        ("status ILIKE '_a%'", False),
    ],
)
def test_restricts_is_a_comparison_of_a_target_column_with_a_value(condition: str, expected: bool) -> None:
    assert restricts(where_of(condition), "o", ORDERS) is expected


def test_restricts_for_an_unaliased_target_and_a_missing_where() -> None:
    where = parse("DELETE FROM orders WHERE orders.id = 1").stmts[0].stmt.delete_stmt.where_clause
    assert restricts(where, "orders", ORDERS)
    assert not restricts(pb.Node(), "orders", ORDERS)


@pytest.mark.parametrize(
    "condition",
    [
        "id = id",
        "tenant_id = tenant_id",
        "id IS NOT NULL",
        "EXISTS (SELECT 1 FROM customers)",
        "true",
        "status LIKE '%'",
        "status LIKE $1",
        "status ILIKE $1",
        "status >= ''",
        "id >= 0 OR id < 0",
        "paid >= false",
        "created_at > '-infinity'",
        "id = 1 OR id > 0",
    ],
)
def test_require_where_refuses_wheres_that_filter_nothing(engine: PolicyEngine, condition: str) -> None:
    refused_with(engine, f"UPDATE orders SET status = 'x' WHERE {condition}", "require_where", "fix-status")


# -- finding 5: the rewrite keeps the meaning of OR and NOT ------------------------------------------------

ANY_WHERE = [
    {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
    {"id": "fix-any-status", "effect": "allow", "actions": ["update"], "tables": ["orders"], "columns": ["status"]},
]


@pytest.mark.parametrize(
    ("where", "rewritten"),
    [
        ("id = 11 OR id = 12", "(id = 11 OR id = 12) AND orders.tenant_id = 'acme'"),
        ("NOT (id = 11)", "NOT id = 11 AND orders.tenant_id = 'acme'"),
        ("id = 11 AND paid", "id = 11 AND paid AND orders.tenant_id = 'acme'"),
        ("(id = 11 OR id = 12) AND NOT paid", "(id = 11 OR id = 12) AND NOT paid AND orders.tenant_id = 'acme'"),
    ],
)
def test_the_tenant_predicate_is_anded_around_the_whole_where(where: str, rewritten: str) -> None:
    engine = PolicyEngine(spec(rules=ANY_WHERE), schema())
    decision = engine.decide(PRINCIPAL, f"UPDATE orders SET status = 'shipped' WHERE {where}", tenant="acme")
    assert decision.allowed, decision.reasons
    assert decision.sql == f"UPDATE orders SET status = 'shipped' WHERE {rewritten}"


# -- finding 6: quoted names are compared exactly -----------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "code", "named"),
    [
        ('SELECT "LOWER"(status) FROM orders', "function_not_allowed", "LOWER"),
        ('SELECT "Upper"(status) FROM orders', "function_not_allowed", "Upper"),
        ('SELECT pg_catalog."COUNT"(*) FROM orders', "function_not_allowed", "COUNT"),
        ('SELECT CAST(id AS "TEXT") FROM orders', "cast_not_allowed", "TEXT"),
        ('SELECT id::"Int4" FROM orders', "cast_not_allowed", "Int4"),
        ('SELECT id::pg_catalog."INT8" FROM orders', "cast_not_allowed", "INT8"),
        ('SELECT id FROM "Orders"', "unknown_table", "Orders"),
        ('SELECT "ID" FROM orders', "unknown_column", "ID"),
        ('SELECT o."Status" FROM orders o', "unknown_column", "Status"),
        ("UPDATE \"ORDERS\" SET status = 'x' WHERE id = 1", "unknown_table", "ORDERS"),
        ("UPDATE orders SET \"STATUS\" = 'x' WHERE id = 1", "unknown_column", "STATUS"),
        ('SELECT id FROM "PUBLIC".orders', "other_schema", "PUBLIC"),
    ],
)
def test_quoted_names_are_case_sensitive(engine: PolicyEngine, sql: str, code: str, named: str) -> None:
    refused_with(engine, sql, code, named)


def test_quoted_lower_case_names_are_the_same_names(engine: PolicyEngine) -> None:
    for sql in (
        'SELECT "lower"(status) FROM orders',
        'SELECT CAST(id AS "text") FROM "orders"',
        'SELECT pg_catalog.upper("status") FROM public.orders',
        "SELECT LOWER(Status) FROM ORDERS",
    ):
        decision = engine.decide(PRINCIPAL, sql, tenant="acme")
        assert decision.allowed, (sql, decision.reasons)


# -- found reading the code: functions that run SQL text or change state pass an allowlist miss in warn mode --


@pytest.mark.parametrize("mode", ["warn", "audit"])
@pytest.mark.parametrize(
    "call",
    [
        "ts_stat('SELECT api_key::tsvector FROM secrets')",
        "ts_rewrite('a'::tsquery, 'SELECT ''a''::tsquery, ''b''')",
        "query_to_xmlschema('SELECT api_key FROM secrets', true, true, '')",
        "table_to_xmlschema('secrets', true, true, '')",
        "cursor_to_xmlschema('c', true, true, '')",
        "database_to_xml_and_xmlschema(true, true, '')",
        "currval('s')",
        "lastval()",
        "txid_current_if_assigned()",
        "brin_summarize_new_values('i')",
        "gin_clean_pending_list('i')",
        "has_table_privilege('secrets', 'select')",
        "to_regclass('secrets')",
        "current_database()",
        "version()",
        "inet_client_addr()",
        "obj_description(1)",
        "format_type(1, 1)",
        "row_security_active('orders')",
        "binary_upgrade_set_next_pg_type_oid(1)",
        "system_user",
        # outside review F7: session information, settings and random state under other names
        "getpgusername()",
        "current_query()",
        "setseed(0.42)",
        "getdatabaseencoding()",
        "get_current_ts_config()",
        "mxid_age('1'::xid)",
        "currtid2('orders', '(0,1)'::tid)",
        "regclass('secrets')",
        "regrolein('postgres')",
        "aclexplode(NULL)",
        "amvalidate(1)",
        "plpgsql_validator(1)",
        "fmgr_sql_validator(1)",
        "loread(0, 1)",
        "lowrite(0, 'x')",
    ],
)
def test_functions_that_escape_the_statement_are_unsafe_in_every_mode(mode: str, call: str) -> None:
    engine = PolicyEngine(spec(mode=mode), schema())
    decision = engine.decide(PRINCIPAL, f"SELECT id FROM orders WHERE id = 1 AND {call} IS NOT NULL", tenant="acme")
    assert not decision.allowed, (call, decision.reasons)
    assert any(r.code == "unsafe_function" for r in decision.reasons), decision.reasons


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT total::numeric(12, length(set_config('statement_timeout', '0', false))) FROM orders",
        "SELECT id FROM orders WHERE id = CAST(1 AS numeric(pg_backend_pid()))",
        "SELECT total::numeric($1) FROM orders",
    ],
)
def test_type_modifiers_must_be_integer_literals(engine: PolicyEngine, sql: str) -> None:
    """libpg_query's deparser drops a modifier that is not a constant (numeric(12, )): what runs would differ."""
    refused_with(engine, sql, "cast_not_allowed", "type modifiers")


def test_a_row_lock_reaches_only_rows_the_update_rules_filter_admits() -> None:
    """Found reading the code: FOR UPDATE locked every readable row, even rows the update rule's rowFilter excludes."""
    rules = [
        {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
        {
            "id": "fix-open",
            "effect": "allow",
            "actions": ["update"],
            "tables": ["orders"],
            "columns": ["status"],
            "rowFilter": "status = 'open'",
        },
    ]
    engine = PolicyEngine(spec(rules=rules), schema())
    locked = engine.decide(PRINCIPAL, "SELECT id FROM orders WHERE id = 11 FOR UPDATE", tenant="acme")
    assert locked.allowed, locked.reasons
    assert locked.sql == (
        "SELECT id FROM (SELECT id FROM orders WHERE tenant_id = 'acme' AND status = 'open') orders "
        "WHERE id = 11 LIMIT 11 FOR UPDATE"
    )
    read = engine.decide(PRINCIPAL, "SELECT id FROM orders WHERE id = 11", tenant="acme")
    assert read.sql == "SELECT id FROM (SELECT id FROM orders WHERE tenant_id = 'acme') orders WHERE id = 11 LIMIT 1000"
    unpooled = engine.decide(PRINCIPAL, "SELECT id FROM orders o WHERE id = 11 FOR SHARE")
    assert unpooled.sql == (
        "SELECT id FROM (SELECT id FROM orders WHERE status = 'open') o WHERE id = 11 LIMIT 11 FOR SHARE"
    )


def test_every_select_field_is_handled_by_some_form() -> None:
    """A field a newer libpg_query adds is in no form's list, so every SELECT setting it is refused by name;
    this test says so when the message classes change."""
    assert {f.name for f in pb.SelectStmt.DESCRIPTOR.fields} == SELECT_FIELDS | SET_OPERATION_FIELDS | VALUES_FIELDS


# -- second review, finding 1: a rowFilter makes no column readable -----------------------------------------

NAMES_ONLY = [
    {"id": "read-names", "effect": "allow", "actions": ["select"], "tables": ["customers"], "columns": ["id", "name"]},
    {"id": "never-email", "effect": "deny", "actions": ["select"], "tables": ["customers"], "columns": ["email"]},
    {
        "id": "fix-names",
        "effect": "allow",
        "actions": ["update"],
        "tables": ["customers"],
        "columns": ["name"],
        "rowFilter": "email IS NOT NULL AND ssn IS NOT NULL",
    },
]


def test_a_row_filter_column_is_not_readable_without_a_select_rule() -> None:
    engine = PolicyEngine(spec(rules=NAMES_ONLY), schema())
    refused_with(engine, "SELECT id, email FROM customers", "denied_by_rule", "never-email")
    refused_with(engine, "SELECT id FROM customers WHERE email LIKE 'a%'", "denied_by_rule", "never-email")
    refused_with(engine, "SELECT ssn FROM customers", "no_allow_rule", "customers.ssn")
    assert engine.decide(PRINCIPAL, "SELECT id, name FROM customers", tenant="acme").allowed
    update = engine.decide(PRINCIPAL, "UPDATE customers SET name = 'x' WHERE id = 1", tenant="acme")
    assert update.allowed and "email IS NOT NULL" in update.sql, update.reasons


def test_the_tenant_column_is_readable_unless_a_rule_denies_it() -> None:
    readable = PolicyEngine(spec(rules=NAMES_ONLY), schema())
    assert readable.decide(PRINCIPAL, "SELECT tenant_id FROM customers", tenant="acme").allowed
    deny = {
        "id": "no-tenant",
        "effect": "deny",
        "actions": ["select"],
        "tables": ["customers"],
        "columns": ["tenant_id"],
    }
    engine = PolicyEngine(spec(rules=[*NAMES_ONLY, deny]), schema())
    refused_with(engine, "SELECT tenant_id FROM customers", "denied_by_rule", "no-tenant")


# -- second review, finding 4: a rowFilter belongs to the table, and an insert rowFilter cannot be checked ----

VIP_NAMES = {
    "id": "vip-names",
    "effect": "allow",
    "actions": ["select"],
    "tables": ["customers"],
    "columns": ["id", "name"],
    "rowFilter": "id < 10",
}
ALL_IDS = {"id": "all-ids", "effect": "allow", "actions": ["select"], "tables": ["customers"], "columns": ["id"]}


@pytest.mark.parametrize(
    ("rules", "named"),
    [
        ([VIP_NAMES, ALL_IDS], "customers.name"),
        ([VIP_NAMES, {**ALL_IDS, "rowFilter": "id > 20"}], "customers.name"),
        ([{**VIP_NAMES, "columns": ["*"]}, ALL_IDS], "customers"),
        ([{**VIP_NAMES, "tables": ["*"]}, ALL_IDS], "customers.name"),
        (
            [
                {**VIP_NAMES, "actions": ["update"], "columns": ["name"]},
                {**ALL_IDS, "actions": ["update"], "columns": ["email"]},
            ],
            "customers.name",
        ),
    ],
)
def test_a_column_allowed_only_under_a_filter_another_rule_lifts_is_an_invalid_policy(
    rules: list[dict], named: str
) -> None:
    with pytest.raises(PolicyError, match=f"{named}.*rowFilter"):
        PolicyEngine(spec(rules=rules), schema())


@pytest.mark.parametrize(
    "rules",
    [
        [VIP_NAMES, {**ALL_IDS, "columns": ["id", "name"], "rowFilter": "id > 20"}],  # both filters cover both columns
        [VIP_NAMES, {**ALL_IDS, "columns": ["id", "name"]}],  # an unfiltered rule covers every column the filter does
        [{**VIP_NAMES, "columns": ["id"]}, {**ALL_IDS, "columns": ["id", "name"]}],
        [VIP_NAMES, {**ALL_IDS, "actions": ["update"], "columns": ["email"]}],  # other actions are other row sets
    ],
)
def test_filters_that_cover_every_column_they_restrict_compile(rules: list[dict]) -> None:
    engine = PolicyEngine(spec(rules=rules), schema())
    assert engine.decide(PRINCIPAL, "SELECT id FROM customers", tenant="acme").allowed


def test_an_insert_rule_with_a_row_filter_is_an_invalid_policy() -> None:
    """The engine cannot check VALUES (or an INSERT ... SELECT's rows) against a filter, so it would admit rows
    only the database's WITH CHECK refuses: such a policy is refused when it is compiled."""
    rule = {
        "id": "small-orders",
        "effect": "allow",
        "actions": ["insert"],
        "tables": ["orders"],
        "rowFilter": "total < 100",
    }
    with pytest.raises(PolicyError, match=r"small-orders.*insert"):
        PolicyEngine(spec(rules=rules_with(rule)), schema())
    with pytest.raises(PolicyError, match=r"small-orders.*insert"):
        PolicyEngine(spec(rules=rules_with({**rule, "actions": ["select", "insert"]})), schema())


# -- outside review (F6): a rule's approval holds in every mode --------------------------------------------


@pytest.mark.parametrize("mode", ["warn", "audit", "enforce"])
def test_approvals_are_enforced_in_every_mode(mode: str) -> None:
    """warn/audit relax policy-level denials; a human approval the rule asks for is not one of them."""
    refund = {
        "id": "refund",
        "effect": "allow",
        "actions": ["update"],
        "tables": ["orders"],
        "columns": ["status"],
        "requireWhere": True,
        "approval": {"approvers": ["user:alice"], "minApprovals": 1},
    }
    engine = PolicyEngine(spec(mode=mode, rules=rules_with(refund)), schema())
    sql = "UPDATE orders SET status = 'refunded' WHERE id = 13"
    pending = engine.decide(PRINCIPAL, sql, tenant="acme")
    assert not pending.allowed and pending.sql is None, pending
    assert [r.code for r in pending.reasons] == ["approval_required"]
    assert not engine.decide(PRINCIPAL, sql, tenant="acme", approvals=frozenset({"user:bob"})).allowed
    approved = engine.decide(PRINCIPAL, sql, tenant="acme", approvals=frozenset({"user:alice"}))
    assert approved.allowed and approved.sql is not None and approved.enforced


# -- outside review (F8): ON CONFLICT DO UPDATE obeys the update rule's requireWhere ----------------------

UPSERT_RULES = [
    {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
    {
        "id": "add-orders",
        "effect": "allow",
        "actions": ["insert"],
        "tables": ["orders"],
        "columns": ["id", "customer_id", "status", "total"],
    },
    {"id": "fix-status", "effect": "allow", "actions": ["update"], "tables": ["orders"], "columns": ["status"]},
]
UPSERT = "INSERT INTO orders (id, customer_id, status, total) {source} ON CONFLICT (tenant_id, id) DO UPDATE SET "


def upsert_engine(require_where: bool) -> PolicyEngine:
    rules = [dict(rule) for rule in UPSERT_RULES]
    rules[2]["requireWhere"] = require_where
    return PolicyEngine(spec(rules=rules), schema())


@pytest.mark.parametrize(
    "source",
    [
        "SELECT id, customer_id, status, total FROM orders",
        "SELECT id, customer_id, status, total FROM orders WHERE id = 1",
        "VALUES (1, 2, 'x', 3), (id, 2, 'x', 3)",
        "VALUES (1, 2, 'x', 3 + 0)",
    ],
)
def test_an_upsert_from_anything_but_a_values_list_of_values_fails_require_where(source: str) -> None:
    """Each conflicting row of the source is updated: only a VALUES list of literals names the rows by key."""
    sql = UPSERT.format(source=source) + "status = 'bulk'"
    refused_with(upsert_engine(True), sql, "require_where", "fix-status")
    decision = upsert_engine(False).decide(PRINCIPAL, sql, tenant="acme")
    assert not any(r.code == "require_where" for r in decision.reasons), decision.reasons


@pytest.mark.parametrize(
    "source",
    ["VALUES (1, 2, 'x', 3)", "VALUES ($1, $2, $3, $4), (7, 8, 'y', 9.5)"],
)
def test_an_upsert_from_a_values_list_of_values_meets_require_where(source: str) -> None:
    sql = UPSERT.format(source=source) + "status = 'bulk'"
    params = [1, 2, "x", 3] if "$1" in source else None
    decision = upsert_engine(True).decide(PRINCIPAL, sql, params, tenant="acme")
    assert decision.allowed, decision.reasons
    on_nothing = "INSERT INTO orders (id, customer_id, status, total) SELECT id, customer_id, status, total FROM orders"
    assert upsert_engine(True).decide(PRINCIPAL, on_nothing + " ON CONFLICT DO NOTHING", tenant="acme").allowed


# -- outside review (F4): a tenant table named like a catalog relation would run as pg_catalog's ------------


@pytest.mark.parametrize(
    "ddl",
    [
        "CREATE TABLE pg_settings (name text, setting text)",
        "CREATE TABLE orders (id integer); CREATE TABLE pg_roles (rolname text, rolsuper boolean)",
        "CREATE TABLE orders (id integer, pg_note text)",
        "CREATE TABLE orders (id integer); ALTER TABLE orders ADD COLUMN pg_class text",
    ],
)
def test_a_tenant_name_starting_with_pg_is_refused_when_the_schema_is_read(ddl: str) -> None:
    """The guard resolves names with pg_catalog first: the engine would check the tenant's table, the catalog's run."""
    with pytest.raises(SchemaError, match="pg_"):
        Schema.from_ddl(ddl, "app")


def test_a_live_catalog_with_a_pg_table_is_refused() -> None:
    with pytest.raises(SchemaError, match="pg_settings"):
        Schema.from_catalog("app", [("pg_settings", "name", "text"), ("orders", "id", "int4")], [])
    assert Schema.from_catalog("app", [("orders", "id", "int4"), ("orders", "pgx", "text")], []).tables["orders"]


def test_a_live_schema_with_a_table_named_like_a_catalog_is_refused(postgres: LocalPostgres) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS catalog_named CASCADE")
        conn.execute("CREATE SCHEMA catalog_named")
        conn.execute("CREATE TABLE catalog_named.pg_settings (name text PRIMARY KEY, setting text)")
    try:
        with pytest.raises(SchemaError, match="pg_settings"):
            read_schema(postgres.dsn, "catalog_named")
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA catalog_named CASCADE")


def test_in_warn_mode_a_step_with_recorded_reasons_waits_for_its_approval() -> None:
    """F6 follow-on: warn mode records a column no rule allows; the approval is what keeps the step waiting, so
    admission admits it as pending and the run awaits the approval (it is not refused as Denied)."""
    refund = {
        "id": "refund",
        "effect": "allow",
        "actions": ["update"],
        "tables": ["orders"],
        "columns": ["status"],
        "approval": {"approvers": ["user:alice"], "minApprovals": 1},
    }
    engine = PolicyEngine(spec(mode="warn", rules=[refund]), schema())
    decision = engine.decide(PRINCIPAL, "UPDATE orders SET status = 'x', total = 1 WHERE id = 13", tenant="acme")
    assert not decision.allowed
    assert {r.code for r in decision.reasons} == {"no_allow_rule", "approval_required"}
    assert [r.code for r in decision.refusing()] == ["approval_required"]
    step = Step(name="refund", kind="mutation", sql="UPDATE orders SET status = 'x', total = 1 WHERE id = 13")
    assert step_problems(step, decision) == []
    refused = StepOutcome("refund", decision, reasons=(Reason("denied", "the policy engine denied the statement"),))
    assert awaits_approval(refused)
    enforced = PolicyEngine(spec(rules=[refund]), schema()).decide(PRINCIPAL, step.sql, tenant="acme")
    assert step_problems(step, enforced) and not awaits_approval(dataclasses.replace(refused, decision=enforced))
