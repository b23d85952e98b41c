"""The gate on real PostgreSQL: the execution guard's limits, the database-side grants and RLS, and a
Hypothesis differential test that the database never allows less than the engine, nor more."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import errors

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.database.agents.grants import agent_role, apply_grants
from paybill.database.agents.guard import ExecutionGuard, Reading, ResultTooLarge, Session
from paybill.policy import PolicyEngine, Schema

from .conftest import PRINCIPAL, SCHEMA_SQL, PolicyDatabase, load_cases, schema, spec, support_policy

ACL_CODES = {"no_allow_rule", "denied_by_rule"}


def limits(**changes: object) -> dict:
    return {**support_policy().spec.limits.model_dump(), **changes}


@pytest.fixture(scope="module")
def acme(policy_db: PolicyDatabase) -> str:
    return policy_db.grant(support_policy().spec, "acme")


@pytest.fixture
def guard(policy_db: PolicyDatabase, acme: str) -> Iterator[ExecutionGuard]:
    with ExecutionGuard(policy_db.engine(), acme, PRINCIPAL, "acme") as guard:
        yield guard


def admin_value(policy_db: PolicyDatabase, query: str) -> object:
    with psycopg.connect(policy_db.admin_dsn) as conn:
        return conn.execute(query).fetchone()[0]


@pytest.mark.parametrize("case", load_cases("legitimate.jsonl"), ids=lambda c: c["id"])
def test_legitimate_statements_run_as_the_agent_role(guard: ExecutionGuard, case: dict) -> None:
    outcome = guard.execute(case["sql"], case.get("params"))
    assert outcome.ok, outcome.reasons
    assert outcome.cost is not None and outcome.cost > 0


def test_reads_see_only_the_tenants_rows(guard: ExecutionGuard) -> None:
    outcome = guard.execute("SELECT tenant_id, count(*) FROM orders WHERE tenant_id = 'globex' OR true GROUP BY 1")
    assert outcome.rows == [("acme", 20)]
    names = guard.execute("SELECT name FROM customers").rows
    assert len(names) == 5 and all(n.startswith("acme-") for (n,) in names)


def test_guard_connects_as_the_agent_role_not_a_superuser(acme: str) -> None:
    with psycopg.connect(acme) as conn:
        user, superuser = conn.execute(
            "SELECT current_user, usesuper FROM pg_user WHERE usename = current_user"
        ).fetchone()
    assert user == agent_role("support", "acme") and superuser is False


def test_dml_over_max_rows_written_is_rolled_back(policy_db: PolicyDatabase, acme: str) -> None:
    engine = policy_db.engine(spec(limits=limits(maxRowsWritten=2)))
    before = admin_value(policy_db, "SELECT count(*) FROM orders WHERE status = 'bulk'")
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        outcome = guard.execute("UPDATE orders SET status = 'bulk' WHERE total BETWEEN 0 AND 1000")
        assert not outcome.ok and outcome.reasons[0].code == "rows_written_exceeded"
        assert "20 rows" in outcome.reasons[0].message
        assert guard.execute("UPDATE orders SET status = 'bulk' WHERE id = $1", [10]).rows_affected == 1
    assert admin_value(policy_db, "SELECT count(*) FROM orders WHERE status = 'bulk'") == before + 1
    with psycopg.connect(policy_db.admin_dsn) as conn:
        conn.execute("UPDATE orders SET status = 'open' WHERE id = 10")


def test_reads_are_truncated_at_max_rows_read(policy_db: PolicyDatabase, acme: str) -> None:
    with ExecutionGuard(policy_db.engine(spec(limits=limits(maxRowsRead=3))), acme, PRINCIPAL, "acme") as guard:
        assert len(guard.execute("SELECT id FROM orders").rows) == 3
        assert len(guard.execute("SELECT id FROM orders LIMIT 500").rows) == 3


# Third outside review (MEDIUM): values built inside the limits (`s || s`, doubled at each CTE) reached the operator's
# memory whole: maxRowsRead counts rows, and one row can carry a value of hundreds of megabytes.
DOUBLING = (
    "WITH a AS (SELECT name || name AS s FROM customers), b AS (SELECT s || s AS s FROM a), "
    "c AS (SELECT s || s AS s FROM b), d AS (SELECT s || s AS s FROM c), e AS (SELECT s || s AS s FROM d) "
    "SELECT s FROM e"
)


def test_a_result_past_max_bytes_read_is_refused_and_nothing_of_it_kept(policy_db: PolicyDatabase, acme: str) -> None:
    engine = policy_db.engine(spec(limits=limits(maxBytesRead=2000)))
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        outcome = guard.execute(DOUBLING)  # 5 rows of 32 copies of a 6-7 character name: over 1,000 bytes each
        assert not outcome.ok and outcome.rows == []
        assert outcome.reasons[0].code == "bytes_read_exceeded"
        assert outcome.reasons[0].message == "the statement returned more than maxBytesRead 2000 bytes; none are kept"
        assert guard.execute("SELECT s FROM (SELECT name || name AS s FROM customers) x LIMIT 2").ok  # reconnected
        small = guard.execute("SELECT id, name FROM customers")
        assert small.ok and len(small.rows) == 5


def test_a_write_returning_past_max_bytes_read_is_rolled_back(policy_db: PolicyDatabase, acme: str) -> None:
    engine = policy_db.engine(spec(limits=limits(maxBytesRead=200)))  # 32 bytes in one value: 224 counted
    before = admin_value(policy_db, "SELECT status FROM orders WHERE id = 10")
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        returning = "status || status || status || status || status || status || status || status"
        outcome = guard.execute(f"UPDATE orders SET status = 'huge' WHERE id = $1 RETURNING {returning}", [10])
        assert not outcome.ok and outcome.reasons[0].code == "bytes_read_exceeded"
        assert admin_value(policy_db, "SELECT status FROM orders WHERE id = 10") == before
        assert admin_value(policy_db, "SELECT count(*) FROM orders WHERE status = 'huge'") == 0
        assert guard.execute("SELECT id FROM orders WHERE id = $1", [10]).rows == [(10,)]


def test_max_bytes_read_stops_within_one_row_of_the_limit(policy_db: PolicyDatabase) -> None:
    """Fourth outside review: checked per chunk of 64 rows, 15 times the limit had reached the operator first."""
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        session = Session(conn)
        reading = Reading(1000, 150_000)
        with pytest.raises(ResultTooLarge):
            session.exchange((("SELECT repeat('x', 100000) FROM generate_series(1, 64)", ()),), reading=reading)
        assert 150_000 < reading.received <= 250_000 and session.closed


@pytest.mark.parametrize("value", ["NULL::int", "1.5::numeric"], ids=["null", "numeric"])
def test_max_bytes_read_counts_what_the_operator_holds_per_value_not_only_its_length(
    policy_db: PolicyDatabase, value: str
) -> None:
    """Fifth outside review: 1,500 numeric columns counted 7.5 MB of lengths while the rows kept took 168 MB, and NULL
    columns counted nothing at all."""
    columns = ", ".join([value] * 100)
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        session = Session(conn)
        reading = Reading(1000, 1024 * 1024)
        with pytest.raises(ResultTooLarge):  # 100,000 values: about 300 kB of lengths (numeric), none (NULL)
            session.exchange(((f"SELECT {columns} FROM generate_series(1, 1000)", ()),), reading=reading)
        assert len(reading.rows) < 100


def test_a_parameter_used_many_times_cannot_blow_up_the_plan_the_guard_reads(
    policy_db: PolicyDatabase, acme: str
) -> None:
    """Seventh outside review: a 100 kB parameter used 400 times made EXPLAIN (FORMAT JSON) print a 40 MB plan (the
    planner inlines the value at each use), read whole before maxCost was even checked."""
    statement = f"SELECT id FROM orders WHERE status IN ({', '.join(['$1'] * 400)})"
    with ExecutionGuard(
        policy_db.engine(spec(limits=limits(maxBytesRead=1_000_000))), acme, PRINCIPAL, "acme"
    ) as guard:
        refused = guard.execute(statement, ["x" * 100_000])
        assert not refused.executed and refused.reasons[0].code == "plan_too_large"
        assert refused.reasons[0].message == (
            "its parameters, at each of their uses, would make its plan larger than maxBytesRead 1000000 bytes"
        )
        assert guard.execute(statement, ["open"]).ok


def test_numbers_that_print_long_in_the_plan_are_refused(policy_db: PolicyDatabase, acme: str) -> None:
    """Eighth outside review: `1e131071` is 8 characters that the plan prints as 131,072 digits at each use; 1,500 of
    them made a 197 MB plan row, and 800 uses of it as a parameter a 105 MB one."""
    with ExecutionGuard(
        policy_db.engine(spec(limits=limits(maxBytesRead=1_000_000))), acme, PRINCIPAL, "acme"
    ) as guard:
        literal = guard.execute(f"SELECT id FROM orders WHERE total IN ({', '.join(['1e131071'] * 3)})")
        assert not literal.executed and literal.decision.reasons[0].code == "numeric_too_long"
        statement = f"SELECT id FROM orders WHERE total IN ({', '.join(['$1'] * 1100)})"
        huge = guard.execute(statement, ["1e131071"])  # a parameter of more than 1,000 digits: refused as a constant
        assert not huge.executed and huge.decision.reasons[0].code == "numeric_too_long"
        parameter = guard.execute(statement, ["1e999"])  # 1,000 digits at each of 1,100 uses
        assert not parameter.executed and parameter.reasons[0].code == "plan_too_large"
        assert guard.execute(statement, ["12.5"]).ok and guard.execute("SELECT id FROM orders WHERE total < 1e3").ok
        # ninth outside review: text PostgreSQL reads as a number, and a number padded past a length cap
        quoted = ", ".join(["'1e131071'"] * 800)
        text = guard.execute(f"SELECT id FROM orders WHERE total IN ({quoted})")
        assert not text.executed and text.decision.reasons[-1].code == "plan_too_large"
        padded = guard.execute(statement, ["0" * 92 + "1e999"])
        assert not padded.executed and padded.reasons[0].code == "plan_too_large"


@pytest.mark.parametrize(
    ("commands", "error"),
    [
        ((("SELECT 1/0", ()), ("SELECT 1", ())), errors.DivisionByZero),  # the statement itself is skipped
        ((("SELECT 1", ()), ("SELECT no_such_column FROM pg_class", ())), errors.UndefinedColumn),  # its Parse fails
    ],
    ids=["earlier-command", "parse"],
)
def test_a_statement_read_in_chunks_that_never_runs_keeps_the_error_that_stopped_it(
    policy_db: PolicyDatabase, commands: tuple, error: type[Exception]
) -> None:
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        session = Session(conn)
        with pytest.raises(error):
            session.exchange(commands, reading=Reading(10, 1000))
        assert not session.closed and session.exchange((("SELECT 1", ()),))[0].ntuples == 1
        session.close()


SLOW = "SELECT count(*) FROM orders a, orders b, orders c, orders d, orders e"


def test_cost_precheck_refuses_before_running(policy_db: PolicyDatabase, acme: str) -> None:
    with ExecutionGuard(policy_db.engine(spec(limits=limits(maxCost=50))), acme, PRINCIPAL, "acme") as guard:
        outcome = guard.execute(SLOW)
        assert not outcome.executed and outcome.reasons[0].code == "cost_exceeded"
        assert outcome.cost > 50
        # outside review F1: the estimate comes from statistics over every tenant's rows; the agent never sees it
        assert outcome.reasons[0].message == "the statement's estimated cost is above maxCost 50"
        assert f"{outcome.cost:.0f}" not in outcome.reasons[0].message
        assert guard.execute("SELECT id FROM orders WHERE id = 10").ok


def test_the_cost_precheck_holds_for_every_parameter_not_only_the_first(policy_db: PolicyDatabase, acme: str) -> None:
    """Third outside review: the estimate was cached per statement, so a cheap first parameter let a dear one run."""
    statement = (
        "SELECT count(*) FROM orders a, orders b, orders c WHERE a.id = ANY($1) AND b.id = ANY($1) AND c.id = ANY($1)"
    )
    few, many = [10], list(range(2000))  # the planner's estimate grows with the array
    costs = []
    for first in (few, many):
        with ExecutionGuard(policy_db.engine(spec(limits=limits(maxCost=1e12))), acme, PRINCIPAL, "acme") as probe:
            costs.append(probe.execute(statement, [first]).cost)
    cheap, dear = costs
    assert cheap < dear
    engine = policy_db.engine(spec(limits=limits(maxCost=(cheap + dear) / 2)))
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        assert guard.execute(statement, [few]).ok
        refused = guard.execute(statement, [many])
        assert not refused.executed and refused.reasons[0].code == "cost_exceeded"
        assert guard.execute(statement, [few]).ok


def test_statement_timeout_cancels(policy_db: PolicyDatabase, acme: str) -> None:
    engine = policy_db.engine(spec(limits=limits(statementTimeoutMs=50, maxCost=1e12)))  # SLOW needs ~0.3 s
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        outcome = guard.execute(SLOW)
        assert outcome.reasons[0].code == "timeout"
        assert guard.execute("SELECT id FROM orders WHERE id = 10").ok  # the connection is still usable


def test_statements_per_run_are_bounded(policy_db: PolicyDatabase, acme: str) -> None:
    engine = policy_db.engine(spec(limits=limits(maxStatementsPerRun=2)))
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        assert guard.execute("SELECT 1 FROM orders LIMIT 1").ok
        assert guard.execute("SELECT 1 FROM orders LIMIT 1").ok
        assert guard.execute("SELECT 1 FROM orders LIMIT 1").reasons[0].code == "statements_exceeded"


def test_denied_statements_never_reach_the_database(guard: ExecutionGuard) -> None:
    outcome = guard.execute("SELECT pg_sleep(30)")
    assert not outcome.executed and outcome.decision.reasons[0].code == "unsafe_function"


@pytest.mark.parametrize(
    "hostile",
    [
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT api_key FROM secrets",
        "SELECT ssn FROM customers",
        "DELETE FROM orders WHERE id = 10",
        "UPDATE orders SET total = 0 WHERE id = 10",
        "SELECT set_config('row_security', 'off', false); SELECT ssn FROM customers",
        "CREATE FUNCTION leak() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER AS $$SELECT ssn FROM customers$$",
        "INSERT INTO orders (id, tenant_id, customer_id, status, total) VALUES (999, 'globex', 101, 'x', 1)",
    ],
)
def test_the_database_refuses_on_its_own(acme: str, hostile: str) -> None:
    """Defense in depth: the agent role, used directly without the engine, still cannot do these."""
    with psycopg.connect(acme) as conn, pytest.raises(psycopg.Error):
        conn.execute(hostile)


def test_the_database_hides_other_tenants_rows_on_its_own(acme: str) -> None:
    with psycopg.connect(acme) as conn:
        conn.execute("RESET ROLE")
        assert conn.execute("SELECT count(*) FROM orders WHERE tenant_id = 'globex'").fetchone() == (0,)
        assert conn.execute("UPDATE orders SET status = 'x' WHERE tenant_id = 'globex'").rowcount == 0
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("UPDATE orders SET status = 'x', tenant_id = 'globex' WHERE id = 10")


def test_upsert_never_updates_another_tenants_row(policy_db: PolicyDatabase) -> None:
    """The arbiter includes tenant_id (an arbiter without it is refused: the conflicting row could be another
    tenant's, locked before the tenant predicate in DO UPDATE's WHERE is evaluated)."""
    upsert = {
        "id": "upsert-orders",
        "effect": "allow",
        "actions": ["insert", "update"],
        "tables": ["orders"],
        "columns": ["id", "customer_id", "status", "total"],
    }
    policy = spec(rules=[*support_policy().spec.model_dump(mode="json")["rules"], upsert])
    dsn = policy_db.grant(policy, "acme", name="upsert")
    statement = (
        "INSERT INTO orders (id, customer_id, status, total) VALUES ($1, 1, 'upserted', 1) "
        "ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status"
    )
    try:
        with ExecutionGuard(policy_db.engine(policy), dsn, PRINCIPAL, "acme") as guard:
            unscoped = guard.execute(statement.replace("(tenant_id, id)", "(id)"), [1010])
            assert not unscoped.executed and unscoped.decision.reasons[0].code == "tenant_unsafe_key"
            beside = guard.execute(statement, [1010])  # globex's order id: a new order of acme's own
            assert beside.ok and beside.rows_affected == 1, beside.reasons
            own = guard.execute(statement, [10])
            assert own.ok and own.rows_affected == 1, own.reasons
            fresh = guard.execute(statement, [77])
            assert fresh.ok and fresh.rows_affected == 1
        assert (
            admin_value(
                policy_db,
                "SELECT string_agg(row(tenant_id, status)::text, ' ' ORDER BY tenant_id) FROM orders WHERE id = 1010",
            )
            == "(acme,upserted) (globex,open)"
        )
        assert (
            admin_value(policy_db, "SELECT row(tenant_id, status)::text FROM orders WHERE id = 10") == "(acme,upserted)"
        )
        assert admin_value(policy_db, "SELECT tenant_id FROM orders WHERE id = 77") == "acme"
        # the role on its own, without the engine: row-level security refuses another tenant's row
        with psycopg.connect(dsn) as conn, pytest.raises(errors.InsufficientPrivilege):
            conn.execute(
                "INSERT INTO orders (id, customer_id, status, total, tenant_id) VALUES (1010, 101, 'x', 1, "
                "'globex') ON CONFLICT (tenant_id, id) DO UPDATE SET status = excluded.status"
            )
    finally:
        with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
            conn.execute("UPDATE orders SET status = 'open' WHERE id = 10")
            conn.execute("DELETE FROM orders WHERE tenant_id = 'acme' AND id IN (77, 1010)")


# -- differential (Hypothesis) ----------------------------------------------------------------------

TABLES = {t.name: list(t.columns) for t in schema().tables.values()}
LITERALS = {
    "id": "10",
    "customer_id": "1",
    "status": "'open'",
    "total": "12",
    "paid": "true",
    "name": "'x'",
    "email": "'x'",
    "ssn": "'1'",
    "api_key": "'k'",
    "tenant_id": "'globex'",
    "created_at": "now()",
    "ref": "NULL",
}


@st.composite
def statements(draw: st.DrawFn) -> str:
    table = draw(st.sampled_from(sorted(TABLES)))
    columns = TABLES[table]
    picked = draw(st.lists(st.sampled_from(columns), min_size=1, max_size=3, unique=True))
    where_col = draw(st.sampled_from(columns))
    where = draw(
        st.sampled_from(
            [
                "",
                f" WHERE {where_col} = {LITERALS[where_col]}",
                f" WHERE {where_col} IS NOT NULL",
                " WHERE tenant_id = 'globex'",
            ]
        )
    )
    kind = draw(st.sampled_from(["select", "select", "update", "delete", "join", "window"]))
    if kind == "select":
        return f"SELECT {', '.join(picked)} FROM {table}{where}"
    if kind == "window":
        return f"SELECT {picked[0]}, count(*) OVER (PARTITION BY {where_col}) FROM {table}{where}"
    if kind == "update":
        return f"UPDATE {table} SET {picked[0]} = {LITERALS[picked[0]]}{where}"
    if kind == "delete":
        return f"DELETE FROM {table}{where}"
    other = draw(st.sampled_from(sorted(TABLES)))
    other_col = draw(st.sampled_from(TABLES[other]))
    return f"SELECT t.{picked[0]}, u.{other_col} FROM {table} t JOIN {other} u ON u.id = t.id"


@pytest.fixture(scope="module")
def agent_conn(acme: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(acme) as conn:
        yield conn


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(statement=statements())
def test_database_agrees_with_the_engine(
    policy_db: PolicyDatabase, agent_conn: psycopg.Connection, statement: str
) -> None:
    engine = PolicyEngine(support_policy().spec, schema())
    decision = engine.decide(PRINCIPAL, statement, tenant="acme")
    try:
        if decision.allowed:
            # Whenever the engine allows a statement, the database allows what runs, and shows only acme rows.
            cur = agent_conn.execute(decision.sql)
            if cur.description and "tenant_id" in [c.name for c in cur.description]:
                index = [c.name for c in cur.description].index("tenant_id")
                assert {row[index] for row in cur.fetchall()} <= {"acme"}
        elif {r.code for r in decision.reasons} <= ACL_CODES:
            # Out of policy: the database refuses the original statement as well.
            with pytest.raises(errors.InsufficientPrivilege):
                agent_conn.execute(statement)
        agent_conn.rollback()
        # Cross-tenant reads, even run raw by the role, never see another tenant's rows.
        if statement.startswith("SELECT") and "tenant_id = 'globex'" in statement:
            with contextlib.suppress(errors.InsufficientPrivilege):
                assert agent_conn.execute(statement).fetchall() == []
    finally:
        agent_conn.rollback()


@settings(max_examples=100, deadline=None)
@given(statement=statements())
def test_an_empty_policy_denies_everything(statement: str) -> None:
    empty = PolicyEngine(spec(rules=[], functions=[]), schema())
    assert not empty.decide(PRINCIPAL, statement, tenant="acme").allowed


@settings(max_examples=100, deadline=None)
@given(
    statement=statements(),
    table=st.sampled_from(["orders", "customers", "*"]),
    action=st.sampled_from(["select", "update", "delete"]),
    columns=st.sampled_from([["*"], ["id"], ["status"]]),
)
def test_adding_a_deny_rule_never_admits_more(statement: str, table: str, action: str, columns: list[str]) -> None:
    base = support_policy().spec
    stricter = spec(
        rules=[
            *base.model_dump(mode="json")["rules"],
            {"id": "extra-deny", "effect": "deny", "actions": [action], "tables": [table], "columns": columns},
        ]
    )
    before = PolicyEngine(base, schema()).decide(PRINCIPAL, statement, tenant="acme")
    after = PolicyEngine(stricter, schema()).decide(PRINCIPAL, statement, tenant="acme")
    assert after.allowed <= before.allowed


def test_a_dead_database_is_a_reason_not_a_crash(policy_db: PolicyDatabase) -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"host=127.0.0.1 port={port} dbname=x user=agent password=s3cret connect_timeout=2"
    with ExecutionGuard(policy_db.engine(), dead, PRINCIPAL, "acme") as guard:
        outcome = guard.execute("SELECT id FROM orders")
    assert not outcome.executed and outcome.decision.allowed
    assert outcome.reasons[0].code == "database_error" and "s3cret" not in outcome.reasons[0].message


# -- issue 10: row locks count as writes; the rewrite keeps OR/NOT WHEREs ---------------------------------


def test_a_row_lock_over_max_rows_written_is_rolled_back(policy_db: PolicyDatabase, acme: str) -> None:
    engine = policy_db.engine(spec(limits=limits(maxRowsWritten=2)))
    with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
        many = guard.execute("SELECT id FROM orders WHERE total >= 0 AND total <= 1000 FOR UPDATE")
        assert not many.executed and many.rows == [], many.reasons
        assert many.reasons[0].code == "rows_written_exceeded" and "3 rows" in many.reasons[0].message
        one = guard.execute("SELECT id, status FROM orders WHERE id = $1 FOR NO KEY UPDATE", [10])
        assert one.ok and one.rows == [(10, "open")], one.reasons


@pytest.mark.parametrize(
    "where",
    [
        "id = 11 OR id = 12",
        "NOT (id = 11)",
        "id = 11 OR (id = 12 AND NOT paid) OR id = 1012",
        "NOT (id = 11 OR paid) AND total < 40",
        "(id = 11 OR id = 1011) AND NOT (paid AND id = 12)",
        "NOT NOT (id = 13)",
        "id IN (11, 12, 1011) AND (status = 'paid' OR NOT paid)",
    ],
)
def test_or_and_not_wheres_update_exactly_the_tenants_rows(policy_db: PolicyDatabase, acme: str, where: str) -> None:
    """The rewritten UPDATE changes exactly the rows the agent's own WHERE selects among the tenant's rows."""
    rules = [
        {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
        {"id": "fix-any-status", "effect": "allow", "actions": ["update"], "tables": ["orders"], "columns": ["status"]},
    ]
    engine = policy_db.engine(spec(rules=rules, limits=limits(maxRowsWritten=100)))
    with psycopg.connect(policy_db.admin_dsn) as conn:
        before = dict(conn.execute("SELECT id, status FROM orders").fetchall())
        expected = {i for (i,) in conn.execute(f"SELECT id FROM orders WHERE tenant_id = 'acme' AND ({where})")}
    assert expected  # every case selects some of acme's rows
    try:
        with ExecutionGuard(engine, acme, PRINCIPAL, "acme") as guard:
            outcome = guard.execute(f"UPDATE orders SET status = 'probed' WHERE {where}")
        assert outcome.ok, outcome.reasons
        with psycopg.connect(policy_db.admin_dsn) as conn:
            changed = {i for (i,) in conn.execute("SELECT id FROM orders WHERE status = 'probed'")}
        assert changed == expected and outcome.rows_affected == len(expected)
    finally:
        with psycopg.connect(policy_db.admin_dsn) as conn, conn.cursor() as cur:
            cur.executemany(
                "UPDATE orders SET status = %s WHERE id = %s AND status = 'probed'",
                [(status, key) for key, status in before.items()],
            )


def test_a_row_lock_reaches_only_rows_the_update_filter_admits(policy_db: PolicyDatabase) -> None:
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
    policy = spec(rules=rules)
    dsn = policy_db.grant(policy, "acme", name="lockopen")
    with ExecutionGuard(policy_db.engine(policy), dsn, PRINCIPAL, "acme") as guard:
        assert guard.execute("SELECT id FROM orders WHERE id = 11").rows == [(11,)]  # paid: readable
        paid = guard.execute("SELECT id FROM orders WHERE id = 11 FOR UPDATE")  # ...but not lockable
        assert paid.ok and paid.rows == [], paid.reasons
        open_ = guard.execute("SELECT id FROM orders WHERE id IN (10, 11) FOR UPDATE")
        assert open_.ok and open_.rows == [(10,)], open_.reasons


def test_a_row_filter_column_stays_unreadable_and_the_filter_still_runs(policy_db: PolicyDatabase) -> None:
    """Second review, finding 1: an update rule's rowFilter on email made email readable despite a deny rule.
    The database grants SELECT on filter columns (the rewrite's filtered subquery reads them as the agent role);
    the engine refuses any agent read of them that no select rule allows."""
    rules = [
        {
            "id": "read-names",
            "effect": "allow",
            "actions": ["select"],
            "tables": ["customers"],
            "columns": ["id", "name"],
        },
        {"id": "never-email", "effect": "deny", "actions": ["select"], "tables": ["customers"], "columns": ["email"]},
        {
            "id": "fix-names",
            "effect": "allow",
            "actions": ["update"],
            "tables": ["customers"],
            "columns": ["name"],
            "rowFilter": "email IS NOT NULL",
        },
    ]
    policy = spec(rules=rules)
    dsn = policy_db.grant(policy, "acme", name="filtercols")
    with ExecutionGuard(policy_db.engine(policy), dsn, PRINCIPAL, "acme") as guard:
        emails = guard.execute("SELECT id, email FROM customers")
        assert not emails.ok and not emails.rows and {r.code for r in emails.decision.reasons} == {"denied_by_rule"}
        assert guard.execute("SELECT id, name FROM customers WHERE id = 1").ok
        with psycopg.connect(policy_db.admin_dsn) as conn:
            name, filtered = conn.execute(
                "SELECT name, email IS NOT NULL FROM customers WHERE tenant_id = 'acme' AND id = 1"
            ).fetchone()
        renamed = guard.execute("UPDATE customers SET name = name WHERE id = 1")
        assert renamed.ok, renamed.reasons
        assert renamed.rows_affected == (1 if filtered else 0)
        assert admin_value(policy_db, "SELECT name FROM customers WHERE tenant_id = 'acme' AND id = 1") == name


@contextlib.contextmanager
def extra_table(policy_db: PolicyDatabase, ddl: str, rules: list[dict], rows: str = "") -> Iterator[ExecutionGuard]:
    """A guard for tenant acme under the support policy and `rules`, over the test schema and one more table
    (`ddl`, `rows` inserted as its owner), which is dropped after."""
    tables = Schema.from_ddl(SCHEMA_SQL + ddl)
    policy = support_policy().spec.model_dump()
    policy["rules"].extend(rules)
    engine = PolicyEngine(AgentPolicySpec.model_validate(policy), tables)
    role = agent_role(rules[0]["id"], "acme")
    with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
        conn.execute(ddl)
        if rows:
            conn.execute(rows)
        apply_grants(conn, engine.rules, tables, role, "acme", password="agent-secret")
    try:
        with ExecutionGuard(engine, policy_db.dsn_for_role(role), PRINCIPAL, "acme") as guard:
            yield guard
    finally:
        with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
            conn.execute(ddl.replace("CREATE TABLE", "DROP TABLE").split("(")[0])


def test_a_value_the_client_cannot_load_ends_the_statement_with_a_reason(policy_db: PolicyDatabase) -> None:
    """Eighth outside review (MEDIUM): a jsonb number of more than 4,300 digits is past Python's int conversion, and
    the ValueError psycopg's loader raised escaped the guard: the workflow's step was never recorded nor audited and
    the handler retried it forever. It is a reason now; nothing is kept and the statement's transaction rolls back."""
    ddl = "CREATE TABLE docs (id integer NOT NULL, tenant_id text NOT NULL, doc jsonb, PRIMARY KEY (tenant_id, id));"
    rule = {"id": "docs", "effect": "allow", "actions": ["select", "update"], "tables": ["docs"], "columns": ["*"]}
    long = "('[' || repeat('7', 5000) || ']')::jsonb"
    rows = f"INSERT INTO docs VALUES (1, 'acme', {long}), (2, 'acme', '[7]')"
    with extra_table(policy_db, ddl, [rule], rows) as guard:
        read = guard.execute("SELECT id, doc FROM docs WHERE id = $1", [1])
        assert [r.code for r in read.reasons] == ["result_unreadable"] and not read.rows, read.reasons
        assert "7777" not in read.reasons[0].message and "ValueError" in read.reasons[0].message
        written = guard.execute("UPDATE docs SET doc = doc || '[8]' WHERE id = 2 OR id = 1 RETURNING doc")
        assert [r.code for r in written.reasons] == ["result_unreadable"], written.reasons
        again = guard.execute("SELECT id, doc FROM docs WHERE id = $1", [2])
        assert again.ok and again.rows == [(2, [7])], again  # the update rolled back; the guard goes on


def test_an_insert_may_take_its_serial_key_from_its_sequence(policy_db: PolicyDatabase) -> None:
    """Eighth outside review (LOW): an INSERT into a table keyed by a `serial` column was admitted and always failed
    with 42501 (permission denied for its sequence): the role is granted USAGE on the sequences behind the serial
    columns of the tables it may insert into, and on no other."""
    ddl = (
        "CREATE TABLE notes (id serial NOT NULL, tenant_id text NOT NULL, order_id integer, body text,"
        " PRIMARY KEY (tenant_id, id));"
    )
    rule = {
        "id": "notes",
        "effect": "allow",
        "actions": ["insert"],
        "tables": ["notes"],
        "columns": ["order_id", "body"],
    }
    with extra_table(policy_db, ddl, [rule]) as guard:
        added = guard.execute("INSERT INTO notes (order_id, body) VALUES ($1, $2)", [11, "called the customer"])
        assert added.ok and added.rows_affected == 1, (added.reasons, added.error)
        with psycopg.connect(policy_db.admin_dsn, autocommit=True) as conn:
            granted = conn.execute(
                "SELECT relname FROM (SELECT oid, relname FROM pg_class WHERE relkind = 'S' OFFSET 0) sequences"
                " WHERE has_sequence_privilege(%s, oid, 'USAGE')",
                (agent_role("notes", "acme"),),
            ).fetchall()
            assert granted == [("notes_id_seq",)]
            ((stored,),) = conn.execute(
                "SELECT count(*) FROM notes WHERE tenant_id = 'acme' AND order_id = 11"
            ).fetchall()
            assert stored == 1


def test_an_agent_reads_a_field_of_a_json_value(policy_db: PolicyDatabase) -> None:
    """Eighth outside review (LOW, a false refusal): `doc ->> 'plan'` was refused as an operator not admitted. `->`
    and `->>` are admitted (a field is no larger than the value it is read from); OPERATOR(pg_catalog.->>) is not."""
    ddl = "CREATE TABLE docs (id integer NOT NULL, tenant_id text NOT NULL, doc jsonb, PRIMARY KEY (tenant_id, id));"
    rule = {"id": "fields", "effect": "allow", "actions": ["select"], "tables": ["docs"], "columns": ["*"]}
    rows = (
        'INSERT INTO docs VALUES (1, \'acme\', \'{"plan": "pro", "seats": [5, 6]}\'),'
        ' (1, \'globex\', \'{"plan": "free", "seats": [1]}\')'
    )
    with extra_table(policy_db, ddl, [rule], rows) as guard:
        read = guard.execute(
            "SELECT id, doc ->> 'plan' AS plan, doc -> 'seats' -> 1 AS second FROM docs WHERE id = $1", [1]
        )
        assert read.ok and read.rows == [(1, "pro", 6)], (read.reasons, read.decision.reasons)
        picked = guard.execute("SELECT id FROM docs WHERE doc ->> 'plan' = $1", ["free"])
        assert picked.ok and picked.rows == [], picked.reasons  # globex's row is not acme's
        qualified = guard.execute("SELECT doc OPERATOR(pg_catalog.->>) 'plan' AS plan FROM docs WHERE id = 1")
        assert not qualified.executed and "not admitted" in qualified.decision.reasons[0].message


def test_an_upserts_where_reads_only_rows_the_agent_may_select(policy_db: PolicyDatabase) -> None:
    """Eighth outside review (MEDIUM): ON CONFLICT DO UPDATE's WHERE was given the tenant predicate but not the select
    rowFilter, and PostgreSQL evaluates it before row-level security's check: a true WHERE on a hidden row raised
    42501, a false one changed nothing, and 24 statements told a hidden amount to within 0.006. The agent's WHERE is
    now evaluated only where the tenant predicate and the row filters hold (CASE WHEN ... THEN ... ELSE false)."""
    ddl = (
        "CREATE TABLE invoices (id integer NOT NULL, tenant_id text NOT NULL, note text, amount numeric,"
        " PRIMARY KEY (tenant_id, id));"
    )
    columns = ["id", "note", "amount"]
    rules = [
        {"id": "invoices", "effect": "allow", "actions": ["select"], "tables": ["invoices"], "columns": columns}
        | {"rowFilter": "amount < 103"},
        {"id": "notes", "effect": "allow", "actions": ["update"], "tables": ["invoices"], "columns": ["note"]},
        {"id": "new", "effect": "allow", "actions": ["insert"], "tables": ["invoices"], "columns": columns},
    ]
    rows = "INSERT INTO invoices VALUES (5, 'acme', 'hidden', 1234.56), (6, 'acme', 'shown', 50)"
    upsert = (
        "INSERT INTO invoices (id, note, amount) VALUES ($1, 'x', 1)"
        " ON CONFLICT (tenant_id, id) DO UPDATE SET note = invoices.note || '!' WHERE invoices.amount > $2"
    )
    with extra_table(policy_db, ddl, rules, rows) as guard:
        assert guard.execute("SELECT id FROM invoices WHERE id = $1", [5]).rows == []
        above, below = guard.execute(upsert, [5, 1000]), guard.execute(upsert, [5, 2000])
        assert (above.reasons, above.rows_affected) == (below.reasons, below.rows_affected) == ((), 0), (above, below)
        # tenth outside review: the WHERE was evaluated as written, before the filter AND-ed after it; a division by
        # zero on the hidden row told its amount apart (17 statements). It reads no row the guard does not admit.
        probe = upsert.replace("invoices.amount > $2", "1 / (CASE WHEN invoices.amount < $2 THEN 0 ELSE 1 END) > 0")
        for bound in (1000, 2000):
            hidden = guard.execute(probe, [5, bound])
            assert (hidden.reasons, hidden.rows_affected) == ((), 0), (bound, hidden)
        shown = guard.execute(upsert, [6, 10])
        assert shown.ok and shown.rows_affected == 1, shown.reasons
        assert guard.execute("SELECT note FROM invoices WHERE id = $1", [6]).rows == [("shown!",)]


def test_a_parameter_that_is_not_text_is_refused_not_raised(guard: ExecutionGuard) -> None:
    """Ninth outside review (LOW): a lone surrogate (which a JSON decoder produces from "\\udc80") made the guard
    raise UnicodeEncodeError before its statement ran, instead of answering."""
    refused = guard.execute("SELECT id FROM orders WHERE status = $1", ["\udc80"])
    assert not refused.executed and [r.code for r in refused.decision.reasons] == ["param_type"], refused
    assert guard.execute("SELECT id FROM orders WHERE status = $1", ["é"]).ok


def test_an_array_parameter_of_mixed_types_is_refused_with_its_reason(guard: ExecutionGuard) -> None:
    """Twelfth outside review (LOW): `id = ANY($1)` with [1, "2"] was admitted, psycopg could not send it, and the
    guard reported a failed connection. It is a parameter of the wrong shape, said so."""
    mixed = guard.execute("SELECT id FROM orders WHERE id = ANY($1)", [[10, "11"]])
    assert not mixed.executed and [r.code for r in mixed.decision.reasons] == ["param_type"], mixed
    assert guard.execute("SELECT id FROM orders WHERE id = ANY($1)", [[10, None, 11]]).ok
