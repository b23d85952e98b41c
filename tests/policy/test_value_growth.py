"""Values built up through nested queries (outside review: 13 nested subqueries of `s || s || s || s` over one letter
built a 256 MiB value at an estimated cost of 8; maxCost cannot see it, and only PostgreSQL's 1 GB value limit and the
timeout stopped it). The analysis counts what each output column is built of (columns, constants and parameters read,
through every CTE, FROM subquery, LATERAL, set operation, VALUES list and scalar subquery) and refuses a statement
where one is built of more than MAX_COPIES."""

from __future__ import annotations

from collections.abc import Callable

import psycopg
import pytest

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.policy import PolicyEngine, Schema
from paybill.policy.analysis import (
    MAX_COPIES,
    MAX_CTES,
    MAX_LIKES,
    MAX_NUMERIC_WORK,
    MAX_PADDED,
    MAX_PATTERN,
    MAX_PRODUCTS,
    MAX_ROW_COPIES,
    MAX_VALUE_COPIES,
    Analysis,
)
from paybill.policy.tree import parse_raw

from .conftest import PRINCIPAL, PolicyDatabase, schema, support_policy


def nested(depth: int, source: str = "(SELECT 'a' AS s)") -> str:
    """`depth` levels of s || s || s || s over `source`."""
    inner = f"{source} a0"
    for n in range(1, depth + 1):
        inner = f"(SELECT s || s || s || s AS s FROM {inner}) a{n}"
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
    assert reason.code == "value_growth" and reason.node == "A_Expr", reason
    assert "made of 128 values read" in reason.message and f"at most {MAX_COPIES}" in reason.message, reason.message


# Each way a value may be carried from one query into another, at MAX_COPIES (admitted) and one past it (refused):
# 8 x 8 = 64, 8 x 8 + 1 = 65 (or 5 x 13 = 65).
SHAPES = {
    "from-subquery": (
        f"SELECT {concatenated('s', 8)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q",
        f"SELECT {concatenated('s', 9)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q",
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
        f"SELECT (SELECT {concatenated('s', 9)} FROM (SELECT {concatenated('status', 8)} AS s FROM orders) q LIMIT 1)",
    ),
    "set-operation": (
        f"SELECT {concatenated('s', 8)} FROM (SELECT status AS s FROM orders UNION ALL"
        f" SELECT {concatenated('status', 8)} FROM orders) q",
        f"SELECT {concatenated('s', 5)} FROM (SELECT status AS s FROM orders UNION ALL"
        f" SELECT {concatenated('status', 13)} FROM orders) q",
    ),
    "values": (
        f"SELECT {concatenated('s', 8)} FROM (VALUES ('a'), ({concatenated('$1::text', 8)})) v(s)",
        f"SELECT {concatenated('s', 5)} FROM (VALUES ('a'), ({concatenated('$1::text', 14)})) v(s)",
    ),
    "star": (
        f"SELECT {concatenated('s', 8)} FROM (SELECT * FROM (SELECT {concatenated('status', 8)} AS s FROM orders) p) q",
        f"SELECT {concatenated('s', 5)} FROM"
        f" (SELECT * FROM (SELECT {concatenated('status', 13)} AS s FROM orders) p) q",
    ),
    "whole-row": (  # a row counts twice: printed, its quotes are escaped
        f"SELECT {concatenated('q::text', 4)} FROM (SELECT {concatenated('status', 4)} AS s, "
        f"{concatenated('status', 4)} AS t FROM orders) q",
        f"SELECT {concatenated('q::text', 4)} FROM (SELECT {concatenated('status', 4)} AS s, "
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
        assert decide(f"UPDATE orders SET status = 'x' WHERE id = 11 RETURNING {value}") == codes, value
    # what is written as text: one value read at most (test_a_value_written_as_text_is_made_of_one_value_read)
    for value, codes in ((carried(1, 1), []), (carried(1, 2), ["value_growth"])):
        assert decide(f"UPDATE orders SET status = {value} WHERE id = 11") == codes, value
        assert decide(f"INSERT INTO orders (id, customer_id, status) VALUES (99, 1, {value})") == codes, value


def test_a_condition_or_a_choice_is_not_the_sum_of_what_it_reads() -> None:
    """A comparison or a test is one value; CASE, COALESCE and GREATEST give one of theirs; a function's window,
    order and filter build none of its value. Otherwise a long legitimate CASE would be refused."""
    labels = " ".join(f"WHEN status = 's{n}' THEN 'label {n}'" for n in range(100))
    assert built_of(f"SELECT CASE {labels} ELSE status || status END FROM orders") == (2,)
    assert built_of("SELECT coalesce(status, status || status, 'x') FROM orders") == (2,)
    assert built_of("SELECT status = 'a' AND total > 1 AND status IS NOT NULL AND id IN (1, 2, 3) FROM orders") == (1,)
    assert built_of("SELECT EXISTS (SELECT 1 FROM orders WHERE status || status = 'aa')") == (1,)
    assert built_of("SELECT count(status) FILTER (WHERE status || status || status = 'x') FROM orders") == (1,)
    assert built_of("SELECT total + total * total FROM orders") == (2,)  # a sum its larger operand, a product both
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


# Statements over one value read (`A`, one order's status), which PostgreSQL repeats as often as the count says, or
# less where a branch or a side is not taken; constants are the empty string (they count nothing: all of them together
# are at most the statement).
A = "(SELECT status AS s FROM orders WHERE id = 10)"
MEASURED = [
    nested(3, A),
    f"WITH a0 AS {A}, a1 AS (SELECT s || s AS s FROM a0), a2 AS (SELECT s || s || s AS s FROM a1)"
    " SELECT s || s FROM a2",
    f"SELECT l.t FROM {A} q, LATERAL (SELECT q.s || q.s || q.s AS t) l",
    f"SELECT s || s FROM (SELECT status AS s FROM orders WHERE id = 10 UNION ALL SELECT s || s || s FROM {A} a) q",
    "SELECT s || s FROM (VALUES ($1::text), ($1::text || $1::text)) v(s)",
    f"SELECT (SELECT s || s FROM {A} q) || (SELECT s || '' FROM {A} r)",
    f"SELECT CASE WHEN s = 'x' THEN s || s ELSE s END FROM {A} q",
    f"SELECT coalesce(s || s || s, s) FROM {A} q",
    f"SELECT * FROM (SELECT s || s AS s FROM (SELECT s || s AS s FROM {A} x) y) z",
    f"SELECT upper(lower(s || s) || s) FROM {A} q",
    "SELECT r || r FROM (SELECT $1::text || $1::text AS s) q(r)",
    f"SELECT nullif(s || s, '') || s FROM {A} q",
    f"SELECT q::text || '' FROM (SELECT s || s AS a, s AS b FROM {A} p) q",
]


def test_the_count_bounds_the_values_postgresql_builds(policy_db: PolicyDatabase) -> None:
    """The count is checked against PostgreSQL: each output is at most that many times as long as the value read
    and what the agent sent (a parameter's first use, like a constant, is not counted), and exactly that many times
    the value read where every branch is taken and nothing was sent."""
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        ((status,),) = conn.execute("SELECT status FROM orders WHERE id = 10").fetchall()
        for sql in MEASURED:
            counted = built_of(sql)
            rows = conn.execute(sql.replace("$1", "%(p)s"), {"p": status}).fetchall()
            longest = tuple(max(len(row[n]) for row in rows) for n in range(len(counted)))
            sent = len(status) if "$1" in sql else 0
            assert all(c * (len(status) + sent) >= m for c, m in zip(counted, longest, strict=True)), (
                sql,
                counted,
                longest,
            )
            if not sent and not any(word in sql for word in ("CASE", "coalesce", "UNION", "q::text")):
                assert counted == tuple(m // len(status) for m in longest), (sql, counted, longest)


def test_the_second_outsiders_statements_are_refused() -> None:
    """Outside review of the bound: NULLIF counted as a fresh value restarted the count at every level (14 levels,
    256 MiB); char(n) padded one letter to 10 MiB, and an array of 64 such to 640 MiB; a WHERE or ORDER BY built an
    array of 30,000 copies of a column, where only output columns were counted."""
    level = "(SELECT 'x' AS s) t0"
    for n in range(1, 15):
        level = f"(SELECT nullif(s || s || s || s, '') AS s FROM {level}) t{n}"
    assert decide(f"SELECT s > 'w' AS built FROM {level}") == ["value_growth"]
    assert decide("SELECT 'x'::char(10485760) > 'w' AS built") == ["value_growth"]
    assert decide(f"SELECT 'x'::char({MAX_PADDED}) > 'w' AS built") == []
    padded = ", ".join([f"'x'::char({MAX_PADDED})"] * (MAX_COPIES + 1))
    assert decide(f"SELECT ARRAY[{padded}] > ARRAY['w'::char(1)] AS built") == ["value_growth"]
    column = "(SELECT status AS s, id, paid FROM orders) t"
    many = f"ARRAY[{', '.join(['s'] * (MAX_COPIES // 2 + 1))}]::text"  # an array counts twice
    for sql in (
        f"SELECT count(*) AS n FROM {column} WHERE {many} > ''",
        f"SELECT id FROM {column} ORDER BY {many} LIMIT 1",
        f"SELECT count(*) FROM {column} GROUP BY {many}",
        f"SELECT count(*) FROM {column} HAVING max({many}) > ''",
        f"SELECT t.id FROM {column} JOIN orders o ON {many} > o.status",
        f"SELECT count(*) FILTER (WHERE {many} > '') FROM {column}",
        f"SELECT CASE WHEN {many} > '' THEN 1 END FROM {column}",
        f"SELECT id FROM {column} WHERE EXISTS (SELECT 1 WHERE {many} > '')",
    ):
        assert decide(sql) == ["value_growth"], sql
        assert decide(sql.replace(many, f"ARRAY[{', '.join(['s'] * (MAX_COPIES // 2))}]::text")) == [], sql


def test_legitimate_reports_stay_admitted() -> None:
    """What a support agent writes: labels and counts of a customer (the review found it refused when a column
    made of no value took its neighbour's count), long IN lists and arrays of constants."""
    report = (
        "WITH s AS (SELECT c.id, c.name || ' <' || c.email || '> first ' || min(o.created_at)::text || ' last '"
        " || max(o.created_at)::text || ' total ' || sum(o.total)::text || ' avg ' || avg(o.total)::text"
        " || ' max ' || max(o.total)::text || ' min ' || min(o.total)::text AS header, count(*) AS orders_n,"
        " count(*) FILTER (WHERE o.status = 'open') AS open_n, count(*) FILTER (WHERE o.status = 'shipped')"
        " AS shipped_n, count(*) FILTER (WHERE NOT o.paid) AS unpaid_n"
        " FROM customers c JOIN orders o ON o.customer_id = c.id GROUP BY c.id, c.name, c.email)"
        " SELECT id, header, orders_n || ' orders: ' || open_n || ' open, ' || shipped_n || ' shipped, '"
        " || unpaid_n || ' unpaid' AS counts FROM s"
    )
    assert decide(report) == []
    ids = ", ".join(str(n) for n in range(1000))
    assert decide(f"SELECT id FROM orders WHERE id IN ({ids})") == []
    assert decide(f"SELECT id FROM orders WHERE id = ANY(ARRAY[{ids}])") == []
    assert decide(f"SELECT ARRAY[{ids}] AS wanted") == []


DOCS = (
    "CREATE TABLE docs (id integer, tenant_id text NOT NULL, doc jsonb, note text, amount numeric,"
    " PRIMARY KEY (tenant_id, id));"
)


def docs_engine() -> PolicyEngine:
    policy = support_policy().spec.model_dump()
    policy["rules"] = [
        {"id": "read-docs", "effect": "allow", "actions": ["select"], "tables": ["docs"], "columns": ["*"]},
        {"id": "write-docs", "effect": "allow", "actions": ["insert", "update"], "tables": ["docs"], "columns": ["*"]},
    ]
    return PolicyEngine(AgentPolicySpec.model_validate(policy), Schema.from_ddl(DOCS))


def test_numbers_that_print_far_longer_than_written_are_refused() -> None:
    """Third outside review (HIGH): `'[1e131071, ... x 7000]'::jsonb::text` printed a 917 MB value from 63 KB, past
    the timeout (printing jsonb does not check for a cancel). A cast to jsonb is not admitted; a JSON value written
    into a column may hold no number that prints more than 16 digits longer than it is written; a text constant
    cast to numeric is held to the numeric constant's 1,000 digits."""
    engine = docs_engine()

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    assert codes("SELECT id FROM docs WHERE id = 10 AND '[1e131071, 1e131071]'::jsonb::text = 'x'") == [
        "cast_not_allowed",
        "numeric_too_long",
    ]
    assert codes("SELECT id FROM docs WHERE id = 10 AND '[1, 2]'::jsonb::text = 'x'") == ["cast_not_allowed"]
    assert codes("SELECT id FROM docs WHERE note::jsonb::text = 'x'") == ["cast_not_allowed"]
    assert codes("INSERT INTO docs (id, doc) VALUES (1, '[1e131071]')") == ["numeric_too_long", "type_mismatch"]
    assert codes("UPDATE docs SET doc = $1 WHERE id = 1", ['{"a": [1e999]}']) == ["numeric_too_long"]
    assert codes("UPDATE docs SET doc = $1 WHERE id = 1", ['{"a": [1.5, 2e3, 12345678901234567890], "b": "1e9"}']) == []
    # eleventh outside review (HIGH): '["1e131071", "9e131071"]' is JSON holding strings, and a numrange of two
    # 131,072-digit bounds: a number quoted is read as a number too
    assert codes("UPDATE docs SET doc = $1 WHERE id = 1", ['{"b": "1e999"}']) == ["numeric_too_long"]
    assert codes('SELECT id FROM docs WHERE note = \'["1e131071", "9e131071"]\'') == ["numeric_too_long"]
    assert codes("INSERT INTO docs (id, doc) VALUES (1, '[1, 2.5, true, null, \"x\"]')") == []
    assert codes("SELECT id FROM docs WHERE amount > '1e131071'::numeric") == ["numeric_too_long"]
    assert codes("SELECT id FROM docs WHERE amount > '1e999'::numeric") == []


def test_a_parameter_counts_where_it_is_used_again() -> None:
    """Each parameter is what the agent sent, like a constant: an array of 70 of them is not made of anything read
    twice (the review found `= ANY(ARRAY[$1, ..., $70])` refused). The same parameter used again is a copy."""
    distinct = ", ".join(f"${n}" for n in range(1, 71))
    engine = PolicyEngine(support_policy().spec, schema())
    decision = engine.decide(PRINCIPAL, f"SELECT id FROM orders WHERE id = ANY(ARRAY[{distinct}])", list(range(70)))
    assert decision.allowed, decision.reasons
    again = ", ".join(["$1::text"] * (MAX_COPIES + 2))
    assert decide(f"SELECT id FROM orders WHERE ARRAY[{again}]::text > ''") == ["value_growth"]


def printed(depth: int, wrap: Callable[[int], str]) -> str:
    """`depth` levels, each printing as text the row or array `wrap(level)` makes of the level below: every quote
    is escaped, so doubles, at each."""
    level = """(SELECT '"' AS s) t0"""
    for n in range(1, depth + 1):
        level = f"(SELECT {wrap(n)}::text AS s FROM {level}) t{n}"
    return f"SELECT s FROM {level}"


WRAPS: dict[str, Callable[[int], str]] = {
    "row": lambda n: "ROW(s)",
    "array": lambda n: "ARRAY[s]",
    "whole-row": lambda n: f"t{n - 1}",
}


@pytest.mark.parametrize("wrap", list(WRAPS.values()), ids=list(WRAPS))
def test_a_row_or_array_printed_as_text_counts_twice(policy_db: PolicyDatabase, wrap: Callable[[int], str]) -> None:
    """Found while fixing the third review: a row or array printed as text escapes each quote (twice as long), so
    one value printed through 12 levels grows 4,096-fold while each level reads it once. A row, an array and a
    whole-row reference count twice what they are made of."""
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        ((value,),) = conn.execute(printed(12, wrap)).fetchall()
    assert len(value) > 4096  # what PostgreSQL builds
    assert decide(printed(12, wrap)) == ["value_growth"]
    assert decide(printed(5, wrap)) == []  # 2 ** 5 = 32


def nested_rows(depth: int, wrap: str = "ROW({})") -> str:
    value = """'"'::text"""
    for _ in range(depth):
        value = wrap.format(value)
    return value


def test_a_row_or_array_of_constants_is_a_value_too() -> None:
    """Fourth outside review (HIGH): a row counted twice what it is made of, and twice nothing is nothing: 27
    nested ROWs around one quote (173 characters) printed 2.3 GB, past the timeout, and an UPDATE stored 100 MB.
    A row or an array counts twice at least one value."""
    for wrap in ("ROW({})", "ARRAY[{}]"):
        assert decide(f"SELECT {nested_rows(26, wrap)}::text = 'x' AS v") == ["value_growth"], wrap
        assert decide(f"UPDATE orders SET status = {nested_rows(25, wrap)}::text WHERE id = 11") == ["value_growth"]
        assert decide(f"SELECT {nested_rows(6, wrap)}::text = 'x' AS v") == []  # 2 ** 6 = 64
        assert decide(f"SELECT {nested_rows(7, wrap)}::text = 'x' AS v") == ["value_growth"]


def test_a_cast_to_json_is_not_admitted_either() -> None:
    """Fourth outside review (HIGH): '{"a": 1e999}'::json (or $1::json) assigned to a jsonb column is stored as
    jsonb, whose numbers print in full: 7,800 x 1e131071 (70 KB) stored, every read printed about 1 GB."""
    engine = docs_engine()
    for sql, params in (
        ("""UPDATE docs SET doc = '{"a": 1e999}'::json WHERE id = 11""", []),
        ("UPDATE docs SET doc = $1::json WHERE id = 11", ['{"a": 1e999}']),
        ("SELECT id FROM docs WHERE note::json::text = 'x'", []),
    ):
        assert "cast_not_allowed" in [r.code for r in engine.decide(PRINCIPAL, sql, params, tenant="acme").reasons], sql


def test_arithmetic_gives_a_number_of_its_largest_operand() -> None:
    """Fourth outside review (false refusal): a pricing pipeline of seven CTEs, each reading the amount twice
    (`amt + amt * 0.08`), was refused as made of 128 values: a number's size does not add up as text does (numeric
    prints at most 147,455 characters). `-` on jsonb still carries its operand (what is left of it)."""
    steps = ", ".join(f"a{n} AS (SELECT id, amt + amt * 0.08 AS amt FROM a{n - 1})" for n in range(1, 8))
    assert decide(f"WITH a0 AS (SELECT id, total AS amt FROM orders), {steps} SELECT id, amt FROM a7") == []
    engine = docs_engine()
    level = "(SELECT doc FROM docs) t0"
    for n in range(1, 8):
        level = f"(SELECT (doc || doc) - 'k' AS doc FROM {level}) t{n}"
    refused = engine.decide(PRINCIPAL, f"SELECT doc FROM {level}", tenant="acme")
    assert [r.code for r in refused.reasons] == ["value_growth"], refused.reasons


def test_multiplying_adds_up_digits() -> None:
    """Fifth outside review (HIGH): `t * t` counted as its larger operand, and 16 levels of squaring made 97,700
    digits of `31`; 64 copies of it printed 8 MB, and 40 such columns took the backend to 2.86 GB. A product or a
    quotient is the sum of its operands; a sum, a difference or a remainder its larger one."""
    squares = ", ".join(f"a{n} AS (SELECT t * t AS t FROM a{n - 1})" for n in range(1, 8))
    sql = f"WITH a0 AS (SELECT id::numeric AS t FROM orders WHERE id = 31), {squares} SELECT t FROM a7"
    assert decide(sql) == ["value_growth"]  # 2 ** 7
    assert decide(sql.replace("t * t", "t + t")) == []


def test_a_row_holds_at_most_max_row_copies() -> None:
    """Fifth outside review (HIGH): the bound held per column and a target list may hold many: 40 columns of 64
    copies each. A row of a SELECT or RETURNING is made of at most MAX_ROW_COPIES values read."""
    column = (
        "(SELECT "
        + concatenated("s", 8)
        + " AS s FROM (SELECT "
        + concatenated("status", 8)
        + " AS s FROM orders) p) q"
    )
    wide = ", ".join(f"s AS c{n}" for n in range(MAX_ROW_COPIES // 64 + 1))
    assert decide(f"SELECT {wide} FROM {column}") == ["value_growth"]
    assert decide(f"SELECT {', '.join(f's AS c{n}' for n in range(MAX_ROW_COPIES // 64))} FROM {column}") == []
    columns = ", ".join(f"c{n} text" for n in range(300))
    engine = PolicyEngine(
        AgentPolicySpec.model_validate(
            {
                **support_policy().spec.model_dump(),
                "rules": [
                    {"id": "read", "effect": "allow", "actions": ["select"], "tables": ["wide"], "columns": ["*"]}
                ],
            }
        ),
        Schema.from_ddl(f"CREATE TABLE wide (id integer, tenant_id text NOT NULL, {columns});"),
    )
    assert engine.decide(PRINCIPAL, "SELECT * FROM wide", tenant="acme").allowed  # 302 columns read once each


def test_a_value_written_as_text_is_made_of_one_value_read() -> None:
    """Fifth outside review (MEDIUM): each UPDATE may store 64 copies of what it reads, and the next reads that:
    4, 256, 16K, 1M, 64M characters in four statements. Any text written made of two values read compounds
    (`SET a = a || b`, then `SET b = a || b` grows as Fibonacci), so a text or JSON column is written with at most
    one value read (and constants and parameters); a number is bounded by its type."""
    assert decide("UPDATE orders SET status = status || status WHERE id = 11") == ["value_growth"]
    assert decide("UPDATE orders SET status = status || ' (escalated)' WHERE id = 11") == []
    assert decide("UPDATE orders SET status = $1 WHERE id = 11") == []
    copied = "INSERT INTO orders (id, customer_id, status, total) SELECT id + 1000, customer_id, {} FROM orders"
    assert decide(copied.format("status || status, total") + " WHERE id = 11") == ["value_growth"]
    assert decide(copied.format("status, total + 1") + " WHERE id = 11") == []
    integers = "INSERT INTO orders (id, customer_id, status, total) SELECT id * id + 1000, customer_id, status, total"
    assert decide(integers + " FROM orders WHERE id = 11") == []  # an integer keeps its size


def test_a_number_written_is_made_of_one_value_read() -> None:
    """Sixth outside review (HIGH): a plain numeric column written with 64 copies of itself, three times, held
    1e126976: 7 bytes stored, 126,977 characters printed, and a row of 16 columns of 64 copies of it took the
    backend to 1.27 GB. A numeric value written is made of at most one value read, as text is."""
    engine = docs_engine()

    def codes(sql: str) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, [], tenant="acme").reasons]

    assert codes("UPDATE docs SET amount = amount * amount WHERE id = 10") == ["value_growth"]
    assert codes("UPDATE docs SET amount = amount * 1.1 + 5 WHERE id = 10") == []
    assert codes("UPDATE docs SET amount = $1 WHERE id = 10".replace("$1", "12.5")) == []


def test_the_branches_of_a_choice_are_all_built() -> None:
    """Seventh outside review (HIGH): GREATEST builds every argument (and planning folds every branch of a CASE or
    COALESCE over constants and parameters), so `GREATEST(s || '', ... x 2,500)` over a 1 MB parameter took the
    backend to 2.4 GB while counted as its largest branch. A choice's branches together are held to MAX_COPIES; its
    value is still its largest branch."""
    many = ", ".join(["s || ''"] * (MAX_COPIES + 1))
    assert decide(f"SELECT GREATEST({many}) > '' AS big FROM (SELECT $1::text AS s) q") == ["value_growth"]
    assert decide(f"SELECT COALESCE({many}) > '' AS big FROM (SELECT $1::text AS s) q") == ["value_growth"]
    branches = " ".join(f"WHEN s = '{n}' THEN s || '{n}'" for n in range(MAX_COPIES + 1))
    assert decide(f"SELECT CASE {branches} END FROM (SELECT $1::text AS s) q") == ["value_growth"]
    labels = " ".join(f"WHEN s = '{n}' THEN 'label {n}'" for n in range(200))
    assert decide(f"SELECT CASE {labels} ELSE s END FROM (SELECT $1::text AS s) q") == []


def test_a_parameter_that_reads_as_a_long_number_is_refused() -> None:
    """Seventh outside review (HIGH): `GREATEST(x*x, ... x 2,000)` over `$1::numeric / 7` with $1 = '1e65535' ran
    135 s against a 2 s timeout (multiplying numerics does not stop for a cancel). A parameter that reads as a
    number of more than MAX_NUMERIC_DIGITS digits written out is refused, as such a constant is."""
    engine = PolicyEngine(support_policy().spec, schema())
    sql = "SELECT x * x > 0 AS big FROM (SELECT $1::numeric / 7 AS x) s"
    for value in ("1e65535", 10**1500, "9" * 1001):
        refused = engine.decide(PRINCIPAL, sql, [value], tenant="acme")
        assert [r.code for r in refused.reasons] == ["numeric_too_long"], (value, refused.reasons)
    assert engine.decide(PRINCIPAL, sql, ["1e999"], tenant="acme").allowed
    typed = engine.decide(PRINCIPAL, "SELECT id FROM orders WHERE total > $1", ["1e65535"], tenant="acme")
    assert [r.code for r in typed.reasons] == ["numeric_too_long"]


def test_a_string_that_reads_as_a_long_number_or_json_is_refused_wherever_it_stands() -> None:
    """Eighth outside review (HIGH): PostgreSQL reads a string as a number or JSON where one is expected, and only a
    string cast to numeric was held to MAX_NUMERIC_DIGITS. `amount * 0 + '1e65534' - 1` in a CTE, squared 300 times
    in an AND list, ran 20 s past a 2 s timeout; `doc || '[1e131071, ... x 4000]'` stored 2 KB that prints 1 GB
    (COPY and pg_dump of the database failed); the same in a SELECT sent a 393 MB row. The same holds for
    parameters, whatever type they are given."""
    engine = docs_engine()

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    squared = " AND ".join(["x * x > x"] * 3)
    cte = "WITH c AS (SELECT amount * 0 + '1e65534' - 1 AS x FROM docs WHERE id = 1)"
    assert codes(f"{cte} SELECT {squared} AS y FROM c") == ["numeric_too_long"]
    assert codes("UPDATE docs SET doc = doc || '[1e131071, 1e131071]' WHERE id = 1") == ["numeric_too_long"]
    assert codes("SELECT doc || '{\"a\": [1e999]}' AS p FROM docs WHERE id = 1") == ["numeric_too_long"]
    assert codes("SELECT doc || $1 AS p FROM docs WHERE id = 1", ["[1e131071]"]) == ["numeric_too_long"]
    assert codes("SELECT id FROM docs WHERE note = $1", [{"a": "x"}]) == ["param_type"]
    ordinary = "SELECT doc || '[1e5, 2.5, 12345678901234567890]' AS p, note || '[not json' AS n, amount + '12.50' AS a"
    assert codes(f"{ordinary} FROM docs WHERE id = 1") == []
    assert codes("SELECT doc || $1 AS p FROM docs WHERE id = 1", ['{"a": 1.5e3}']) == []


def test_products_are_counted_and_their_work_bounded() -> None:
    """Eighth outside review (HIGH): constants of at most 1,000 digits multiplied in a CTE column build a number of
    tens of thousands of digits that counts as one value; squaring or dividing it hundreds of times runs uninterrupted.
    An operand of a product made of constants and parameters counts as a value unless it is a small constant; a
    statement computes at most MAX_PRODUCTS products, quotients and remainders, of total work MAX_NUMERIC_WORK."""
    engine = docs_engine()

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    def built(factors: int) -> str:
        return f"WITH c AS (SELECT amount * 0 + {' * '.join(['1e999'] * factors)} AS x FROM docs) SELECT x FROM c"

    assert codes(built(16)) == []
    assert codes(built(24)) == ["value_growth"]  # work 1 + 2 + ... + 23
    base = "WITH c AS (SELECT amount * 7 AS x, amount AS y FROM docs)"
    many = ", ".join(f"x * 3 AS z{n}" for n in range(MAX_PRODUCTS - 1))
    assert codes(f"{base} SELECT {many} FROM c") == []
    assert codes(f"{base} SELECT {many}, y * 3 AS last FROM c") == ["value_growth"]
    doubled = "WITH a AS (SELECT amount * amount AS x FROM docs), b AS (SELECT x * x AS x FROM a)"
    assert codes(f"{doubled} SELECT x / 3 AS z FROM b") == []
    divisions = " + ".join(["x % (x / 7)"] * (MAX_NUMERIC_WORK // 16 + 1))
    assert codes(f"{doubled} SELECT {divisions} AS z FROM b") == ["value_growth"]
    # a number written is made of what it reads: factors and divisors of constants and parameters do not count there
    assert codes("UPDATE docs SET amount = amount * $1 / 100 WHERE id = 1", ["0.95"]) == []
    assert codes("UPDATE docs SET amount = amount * 1.0825 WHERE id = 1") == []
    assert codes("UPDATE docs SET amount = amount * amount WHERE id = 1") == ["value_growth"]


def test_numbers_inside_arrays_ranges_and_deep_json_are_held_too() -> None:
    """Ninth outside review (HIGH): JSON nested past the JSON reader's depth was taken for "not JSON" (1,001 brackets
    around 1e131071s stored 12 KB that printed 655 MB and broke pg_dump), and array and range input were never read
    (`'{1e131071, ...}'` stored 1 KB printing 1.1 GB; `'(0,1e131071]'`). Every number written in a string is held to
    1,000 digits and to 16 more than written, wherever it stands. Tenth outside review (HIGH): read as PostgreSQL reads
    them, `'1e 131071'` (whitespace after e), `'{1.e131071}'`, `'{1\\e131071}'` (array input drops backslashes and
    quotes) were not numbers to the check: 32 divisions ran 17-19 s past a 2 s timeout, 60 KB took the operator to
    2.3 GB and stored rows broke pg_dump."""
    engine = docs_engine()

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    deep = "[" * 1001 + "1e131071" + "]" * 1001
    assert codes(f"UPDATE docs SET doc = doc || '{deep}' WHERE id = 1") == ["numeric_too_long"]
    assert codes("UPDATE docs SET doc = doc || $1 WHERE id = 1", [deep]) == ["numeric_too_long"]
    tenth = (
        "1e 131071",
        "{1.e131071}",
        "{1\\e131071}",
        '{"1e 131071"}',
        "[0,1.e131071)",
        "{1e1\\31071}",
        "{9\n9e\t-40}",
    )
    for value in ("{1e131071,2}", '{"1e999"}', "(0,1e131071]", "[1," + "9" * 1001 + ")", "{{1.5e40}}", *tenth):
        assert codes("SELECT id FROM docs WHERE note = $1", [value]) == ["numeric_too_long"], value
        assert codes(f"SELECT id FROM docs WHERE note = '{value}'") == ["numeric_too_long"], value
    for value in ("{1.5,2,3}", "[1,10)", "version 2e10 of 12345678901234567890", "[" * 1001 + "]" * 1001, "{1.e5}"):
        assert codes("SELECT id FROM docs WHERE note = $1", [value]) == [], value


def test_a_cast_to_numeric_reads_a_number() -> None:
    """Ninth outside review (HIGH): `('1e' || '131071')::numeric / 7` built a 131,072-digit operand out of two short
    constants, counted as one value; 30 divisions by a 65,536-digit one held the database 26.5 s against a 2 s
    timeout. A cast to numeric reads a column of numbers or JSON, a constant, a parameter, or arithmetic and
    aggregates over them; text, stored or built, has digits without bound."""
    engine = docs_engine()

    def codes(sql: str) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, [], tenant="acme").reasons]

    for refused in (
        "WITH c AS (SELECT ('1e' || '131071')::numeric / 7 AS a) SELECT a / 3 AS z FROM c",
        "SELECT (note || 'e5')::numeric AS z FROM docs",
        "SELECT note::numeric AS z FROM docs",
        "SELECT max(note)::numeric AS z FROM docs",
        "SELECT CAST(coalesce(note, '1') AS decimal) AS z FROM docs",
        "SELECT (doc ->> 's')::numeric / 7 AS z FROM docs",  # tenth outside review (MEDIUM): a JSON string, 18 s
    ):
        assert codes(refused) == ["value_growth"], refused
    admitted = (
        "SELECT amount::numeric AS a, (doc -> 'a')::numeric AS b, count(*)::numeric / 3 AS c,"
        " (amount * 2 + id)::numeric AS d, sum(amount)::numeric AS e, '12.5'::numeric AS f,"
        " CASE WHEN id > 1 THEN id::numeric ELSE 0 END AS g, avg(id)::numeric AS h"
        " FROM docs GROUP BY amount, doc, id"
    )
    assert codes(admitted) == []


def test_div_and_mod_are_counted_as_products() -> None:
    """Tenth outside review (LOW): with div and mod allowlisted, 800 of them were admitted where 33 `/` were not."""
    policy = support_policy().spec.model_dump()
    policy["functions"] = [*policy["functions"], "div", "mod"]
    engine = PolicyEngine(AgentPolicySpec.model_validate(policy), schema())
    many = ", ".join(f"div(total, {n + 2}) AS d{n}" for n in range(MAX_PRODUCTS + 1))
    refused = engine.decide(PRINCIPAL, f"SELECT {many} FROM orders", [], tenant="acme")
    assert [r.code for r in refused.reasons] == ["value_growth"], refused.reasons
    assert engine.decide(
        PRINCIPAL, "SELECT div(total, 7) AS d, mod(total, 7) AS m FROM orders", [], tenant="acme"
    ).allowed


def test_the_copies_postgresql_makes_of_in_and_between_operands_are_counted() -> None:
    """Eleventh outside review (HIGH): PostgreSQL evaluates BETWEEN's left operand twice and IN's once for each
    element that reads a column. 21 nested BETWEENs (569 bytes) took a backend to 3.65 GB; `x * x IN (id + 0, ...,
    id + 19)` nested three deep ran 8,000 squarings counted as 14 products. Those copies count: nodes, products and
    their work, compounding as they nest."""
    engine = PolicyEngine(support_policy().spec, schema())

    def codes(sql: str) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, [], tenant="acme").reasons]

    nested = "id BETWEEN 1 AND 2"
    for _ in range(19):
        nested = f"({nested}) BETWEEN false AND true"
    assert codes(f"SELECT id FROM orders WHERE {nested}") == ["value_growth"]
    elements = ", ".join(f"id + {n}" for n in range(MAX_PRODUCTS + 8))
    assert codes(f"SELECT id FROM orders WHERE total * total IN ({elements})") == ["value_growth"]
    assert codes(f"SELECT id FROM orders WHERE total IN ({elements})") == []
    assert codes(f"SELECT id FROM orders WHERE total * total IN ({', '.join(str(n) for n in range(500))})") == []
    assert codes("SELECT id FROM orders WHERE date_trunc('day', created_at) BETWEEN now() AND now()") == []
    assert codes("SELECT id FROM orders WHERE (total * 2 BETWEEN 1 AND 9) BETWEEN false AND true") == []


def test_a_number_written_is_multiplied_by_one_parameter_at_most() -> None:
    """Eleventh outside review (LOW): `SET amount = amount * $1 * ... * $22`, with parameters of 1,000 digits,
    counted as one value read: six statements stored 131,000 digits. One factor of constants and parameters is
    discounted in a number written, not more."""
    engine = docs_engine()
    one = engine.decide(PRINCIPAL, "UPDATE docs SET amount = amount * $1 WHERE id = 1", ["1.05"], tenant="acme")
    assert one.allowed, one.reasons
    two = engine.decide(PRINCIPAL, "UPDATE docs SET amount = amount * $1 * $2 WHERE id = 1", ["2", "3"], tenant="acme")
    assert [r.code for r in two.reasons] == ["value_growth"], two.reasons


def test_a_parameter_number_past_the_range_is_refused_at_once() -> None:
    """Twelfth outside review (HIGH): `WHERE id = $2147483647` made the engine build a set of every number up to it
    (21.8 GB, killed by the kernel): a number out of range is refused and never recorded."""
    engine = PolicyEngine(support_policy().spec, schema())
    for number in (2147483647, 1001, 0):
        decision = engine.decide(PRINCIPAL, f"SELECT id FROM orders WHERE id = ${number}", [], tenant="acme")
        assert not decision.allowed and decision.reasons[0].code == "invalid", decision.reasons
    typed = engine.decide(PRINCIPAL, "SELECT id FROM orders WHERE id IN ($1, $99999999)", [1], tenant="acme")
    assert not typed.allowed and "invalid" in [r.code for r in typed.reasons]


def test_a_value_postgresql_copies_and_a_like_pattern_are_bounded() -> None:
    """Twelfth outside review (HIGH): `$1 IN (s, s, ... x 400)` with a 4 MB $1 put 400 copies of it in the plan (1.5
    GB in the backend); `$1 LIKE $2` over 300,000 and 150,000 characters ran 24 s past a 2 s timeout (LIKE does
    not stop for a cancel); (LOW) `total::numeric(1000, 998)` padded 5 characters to 1,001."""
    engine = PolicyEngine(support_policy().spec, schema())

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    many = ", ".join(["status"] * (MAX_VALUE_COPIES + 1))
    assert codes(f"SELECT id FROM orders WHERE $1 IN ({many})", ["x"]) == ["value_growth"]
    assert codes(f"SELECT id FROM orders WHERE '{'x' * 65}' IN ({many})") == ["value_growth"]
    assert codes("SELECT id FROM orders WHERE $1 IN (status, lower(status))", ["x"]) == []
    assert codes("SELECT id FROM orders WHERE $1 BETWEEN id AND customer_id", [5]) == []
    like = "SELECT id FROM orders WHERE status LIKE $1"
    assert codes(like, ["%" + "a" * MAX_PATTERN]) == ["value_growth"]
    assert codes(like, ["%open%"]) == []
    assert codes("SELECT id FROM orders WHERE status ILIKE '%' || $1 || '%'", ["a" * (MAX_PATTERN + 1)]) == [
        "value_growth"
    ]
    assert codes(f"SELECT id FROM orders WHERE status LIKE '%{'a' * MAX_PATTERN}%'") == ["value_growth"]
    assert codes("SELECT total::numeric(1000, 998) AS t FROM orders") == ["value_growth"]
    assert codes("SELECT total::numeric(100, 4) AS t FROM orders") == []


def test_patterns_copies_and_the_number_reader_hold_whatever_the_statement_hides_them_in() -> None:
    """Thirteenth outside review (HIGH): a LIKE pattern passed through a CASE, a scalar subquery, a CTE column or
    `~~ ANY (SELECT ...)` escaped the 128-character bound (17 s past a 2 s timeout); the planner copies a parameter
    compared with = into a clause for each column its equivalence class joins (60 self-joins on a 3.9 MB $1: 1.15 GB
    in a backend); and '1e' followed by 65,000 spaces took the number reader's regex 26 s, holding the GIL."""
    engine = PolicyEngine(support_policy().spec, schema())

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    long = "%" + "a" * MAX_PATTERN
    for hidden in (
        "SELECT id FROM orders WHERE status LIKE CASE WHEN true THEN $1 END",
        "SELECT id FROM orders WHERE status LIKE (SELECT $1)",
        "WITH p AS (SELECT $1 AS pat) SELECT id FROM orders, p WHERE status LIKE p.pat",
        "SELECT id FROM orders WHERE status ~~ ANY (SELECT $1)",
    ):
        assert codes(hidden, [long]) == ["value_growth"], hidden
        assert codes(hidden, ["%open%"]) == [], hidden
    joined = ", ".join(f"orders o{n}" for n in range(30))
    chained = " AND ".join(f"o{n}.status = o0.status" for n in range(1, 30))
    statement = f"SELECT count(*) AS n FROM {joined} WHERE o0.status = $1 AND {chained}"
    assert codes(statement, ["x" * 1_000_000]) == ["plan_too_large"]
    assert codes(statement, ["open"]) == []
    # 1 MB of it: about 1.5 hours before (quadratic), past the suite's 120 s timeout; linear now
    assert codes("SELECT id FROM orders WHERE status = $1", ["1e" + " " * 1_000_000 + "x"]) == []
    assert codes("SELECT id FROM orders WHERE status = $1", ["{1e  \t 40}"]) == ["numeric_too_long"]


def test_ctes_like_matches_folded_operands_and_huge_integers_are_bounded() -> None:
    """Fourteenth outside review: 4,330 CTEs took the validator to 409 MB (HIGH, a set of names per CTE); 150 LIKEs
    over one 1.5 MB parameter ran 28 s past a 2 s timeout (HIGH); `IN ($1)` and `= lower($1)` are folded to a
    constant the planner copies as `= $1` is (MEDIUM); an integer of 5,000 digits made decide raise (LOW)."""
    engine = PolicyEngine(support_policy().spec, schema())

    def codes(sql: str, params: list[object] | None = None) -> list[str]:
        return [r.code for r in engine.decide(PRINCIPAL, sql, params or [], tenant="acme").reasons]

    ctes = ", ".join(f"c{n} AS (SELECT 1 AS x)" for n in range(MAX_CTES + 1))
    assert codes(f"WITH {ctes} SELECT x FROM c0")[0] == "too_complex"
    likes = ", ".join(f"v.t LIKE '%a{n}%' AS m{n}" for n in range(MAX_LIKES + 1))
    assert codes(f"SELECT {likes} FROM (SELECT $1::text AS t) v", ["a"]) == ["value_growth"]
    joined = ", ".join(f"orders o{n}" for n in range(30))
    chained = " AND ".join(f"o{n}.status = o0.status" for n in range(1, 30))
    for folded in ("o0.status IN ($1)", "o0.status = lower($1)", "o0.status = $1 || ''"):
        statement = f"SELECT count(*) AS n FROM {joined} WHERE {folded} AND {chained}"
        assert codes(statement, ["x" * 1_000_000]) == ["plan_too_large"], folded
    assert codes("SELECT id FROM orders WHERE total = $1", [10**5000]) == ["numeric_too_long"]
