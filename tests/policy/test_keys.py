"""Keys that span tenants: the schema reads them, the engine refuses every write they would let depend on,
lock or reference another tenant's rows (fuzz findings 1-5, found on the shared-key schema below).

A pooled table whose primary key, unique constraint or foreign key lacks tenant_id shares its key space
between tenants: 23505/23503 versus success, ON CONFLICT row counts and the locks a conflict or a foreign-key
check takes all depend on other tenants' rows. The tenant schema therefore keys every pooled table by
(tenant_id, id); these tests hold the engine to both halves: the shared-key schema is refused, the
tenant-scoped one works.
"""

from __future__ import annotations

import psycopg
import pytest

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.database.agents.catalog import read_schema
from paybill.database.migrations import LEDGER, migrate
from paybill.database.server import LocalPostgres
from paybill.policy import PolicyEngine, Schema
from paybill.policy.schema import KeyKind

from .conftest import PRINCIPAL, SCHEMA_SQL, load_cases, support_policy

# The policy test schema as it was when the fuzzer found findings 1-5: keys without tenant_id.
SHARED_KEYS = """
CREATE TABLE customers (id integer PRIMARY KEY, tenant_id text NOT NULL, name text NOT NULL, email text, ssn text,
                        created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE orders (id integer PRIMARY KEY, tenant_id text NOT NULL,
                     customer_id integer NOT NULL REFERENCES customers (id), status text NOT NULL,
                     total numeric(12, 2) NOT NULL, paid boolean NOT NULL DEFAULT false, ref uuid,
                     created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE secrets (id integer PRIMARY KEY, tenant_id text NOT NULL, api_key text NOT NULL);
"""
WRITER_RULES = [
    {
        "id": "add-orders",
        "effect": "allow",
        "actions": ["insert"],
        "tables": ["orders"],
        "columns": ["id", "customer_id", "status", "total"],
    },
    {
        "id": "upsert-orders",
        "effect": "allow",
        "actions": ["update"],
        "tables": ["orders"],
        "columns": ["id", "customer_id", "status"],
    },
    {"id": "drop-orders", "effect": "allow", "actions": ["delete"], "tables": ["orders"], "requireWhere": True},
    {
        "id": "keep-customers",
        "effect": "allow",
        "actions": ["insert", "update", "delete"],
        "tables": ["customers"],
        "columns": ["id", "name", "email"],
    },
]
# Found by the grammar fuzzer on the shared-key schema (fuzz-findings.jsonl): INSERTs whose outcome, locks or
# writes depended on another tenant's rows.
FINDINGS = {
    f["id"]: f["sql"]
    for f in load_cases("fuzz-findings.jsonl")
    if f["id"]
    in (
        "fuzz-1-foreign-key-to-other-tenant",
        "fuzz-2-primary-key-of-other-tenant",
        "fuzz-3-on-conflict-do-nothing-existence",
        "fuzz-4-on-conflict-do-update-locks-other-tenant",
        "fuzz-5-insert-select-key-channels",
    )
}


def writer(ddl: str, extra: list[dict] | None = None) -> PolicyEngine:
    data = support_policy().spec.model_dump(mode="json")
    data["rules"] = [r for r in data["rules"] if r["id"] != "no-delete"] + WRITER_RULES + (extra or [])
    return PolicyEngine(AgentPolicySpec.model_validate(data), Schema.from_ddl(ddl))


def codes(engine: PolicyEngine, sql: str, tenant: str | None = "acme") -> list[str]:
    decision = engine.decide(PRINCIPAL, sql, tenant=tenant)
    assert decision.allowed == (not [r for r in decision.reasons if r.code != "approval_required"]), decision
    return [r.code for r in decision.reasons]


# -- the schema reads keys -----------------------------------------------------------------------------------

KEYED_DDL = """
CREATE TABLE parents (tenant_id text NOT NULL, id integer, code text UNIQUE, PRIMARY KEY (tenant_id, id));
CREATE TABLE children (
    id serial PRIMARY KEY,
    tenant_id text NOT NULL,
    parent_id integer,
    slug text,
    during tsrange,
    UNIQUE (tenant_id, slug),
    FOREIGN KEY (tenant_id, parent_id) REFERENCES parents ON DELETE CASCADE,
    EXCLUDE USING gist (during WITH &&)
);
CREATE UNIQUE INDEX children_lower_slug ON children (lower(slug)) WHERE parent_id IS NOT NULL;
CREATE UNIQUE INDEX parents_code_by_tenant ON parents (tenant_id, code);
ALTER TABLE children ADD COLUMN email text, ADD COLUMN parent_code text;
CREATE UNIQUE INDEX children_email_by_tenant ON children (tenant_id, email);
ALTER TABLE children ADD CONSTRAINT children_email_key UNIQUE USING INDEX children_email_by_tenant;
ALTER TABLE ONLY children ADD CONSTRAINT children_parent FOREIGN KEY (parent_code) REFERENCES parents (code)
    ON UPDATE SET NULL;
"""


def described(schema: Schema) -> dict[str, set[tuple]]:
    """Keys without their names (a live database names what the DDL left unnamed)."""
    return {
        name: {
            (k.kind, k.columns, tuple(sorted(k.involves)), k.references, k.referenced, k.on_update, k.on_delete)
            for k in table.keys
        }
        for name, table in schema.tables.items()
    }


EXPECTED_KEYS = {
    "parents": {
        (KeyKind.PRIMARY, ("tenant_id", "id"), ("id", "tenant_id"), None, (), "a", "a"),
        (KeyKind.UNIQUE, ("code",), ("code",), None, (), "a", "a"),
        (KeyKind.INDEX, ("tenant_id", "code"), ("code", "tenant_id"), None, (), "a", "a"),
    },
    "children": {
        (KeyKind.PRIMARY, ("id",), ("id",), None, (), "a", "a"),
        (KeyKind.UNIQUE, ("tenant_id", "slug"), ("slug", "tenant_id"), None, (), "a", "a"),
        (
            KeyKind.FOREIGN,
            ("tenant_id", "parent_id"),
            ("parent_id", "tenant_id"),
            "parents",
            ("tenant_id", "id"),
            "a",
            "c",
        ),
        (KeyKind.EXCLUSION, (), ("during",), None, (), "a", "a"),
        (KeyKind.INDEX, (), ("parent_id", "slug"), None, (), "a", "a"),
        (KeyKind.UNIQUE, ("tenant_id", "email"), ("email", "tenant_id"), None, (), "a", "a"),
        (KeyKind.FOREIGN, ("parent_code",), ("parent_code",), "parents", ("code",), "n", "a"),
    },
}


def test_keys_are_read_from_every_form_of_ddl() -> None:
    schema = Schema.from_ddl(KEYED_DDL)
    assert described(schema) == EXPECTED_KEYS
    assert "email" in schema.tables["children"].columns
    children, parents = schema.keys["children"], schema.keys["parents"]
    assert set(children.unscoped) == {"id", "during", "parent_id", "slug", "parent_code"}
    assert [k.kind for k in children.unscoped_unique] == [KeyKind.PRIMARY, KeyKind.EXCLUSION, KeyKind.INDEX]
    assert set(parents.unscoped) == {"code"}
    assert set(parents.unscoped_referenced) == {"code"} and set(parents.writing_referenced) == {"code"}
    assert parents.unscoped_referencing is not None and parents.writing_on_delete is not None
    assert set(children.unique_by_name) == {"children_email_key"}


def test_the_digest_changes_with_the_keys() -> None:
    scoped = Schema.from_ddl(SCHEMA_SQL)
    assert Schema.from_ddl(SHARED_KEYS).digest != scoped.digest
    assert Schema.from_ddl(SCHEMA_SQL).digest == scoped.digest
    assert writer(SHARED_KEYS).version != writer(SCHEMA_SQL).version


def test_keys_read_from_a_live_database_match_the_ddl(postgres: LocalPostgres) -> None:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS keyed CASCADE")
        conn.execute("DROP SCHEMA IF EXISTS elsewhere CASCADE")
        conn.execute("CREATE SCHEMA keyed")
        conn.execute("SET search_path = keyed")
        conn.execute(KEYED_DDL)
        conn.execute("CREATE SCHEMA elsewhere")
        conn.execute("CREATE TABLE elsewhere.audit (parent text REFERENCES keyed.parents (code))")
    try:
        live = read_schema(postgres.dsn, "keyed")
        assert described(live) == EXPECTED_KEYS
        assert {(k.table, k.columns, k.references) for k in live.inbound} == {
            ("elsewhere.audit", ("parent",), "parents")
        }
        assert live.tables["children"].keys and all(k.name for t in live.tables.values() for k in t.keys)
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA keyed, elsewhere CASCADE")


# -- the engine refuses what a shared key lets depend on another tenant ---------------------------------------


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_fuzz_findings_are_refused_on_a_shared_key_schema(finding: str) -> None:
    assert len(FINDINGS) == 5
    assert "tenant_unsafe_key" in codes(writer(SHARED_KEYS), FINDINGS[finding])


@pytest.mark.parametrize("finding", sorted(FINDINGS))
def test_fuzz_findings_on_the_tenant_scoped_schema(finding: str) -> None:
    """With (tenant_id, id) keys the same INSERTs touch only acme's key space; ON CONFLICT (id) still names an
    arbiter without tenant_id."""
    expected = ["tenant_unsafe_key"] if "on-conflict-do-update" in finding else []
    assert codes(writer(SCHEMA_SQL), FINDINGS[finding]) == expected


SHARED_KEY_CASES = [
    # (statement, refused on the shared-key schema, refused on the tenant-scoped schema)
    ("UPDATE orders SET customer_id = 101 WHERE id = 10", True, False),
    ("UPDATE orders SET id = 1010 WHERE id = 10", True, False),
    ("UPDATE customers SET id = 7 WHERE id = 1", True, False),  # referenced by orders.customer_id
    ("UPDATE customers SET email = 'x' WHERE id = 1", False, False),
    ("DELETE FROM customers WHERE id = 1", True, False),  # other tenants' orders may reference it
    ("DELETE FROM orders WHERE id = 10", False, False),
    ("INSERT INTO customers (name) VALUES ('x')", False, False),  # the key is left to its default
    ("INSERT INTO customers (id, name) VALUES (7, 'x')", True, False),
    (
        "INSERT INTO orders (id, customer_id, status, total) VALUES (7, 1, 'x', 1) ON CONFLICT (tenant_id, id) "
        "DO UPDATE SET status = 'y'",
        True,
        False,
    ),
    (
        "INSERT INTO orders (id, customer_id, status, total) VALUES (7, 1, 'x', 1) ON CONFLICT (id, tenant_id) "
        "DO NOTHING",
        True,
        False,
    ),
    (
        "INSERT INTO orders (id, customer_id, status, total) VALUES (7, 1, 'x', 1) ON CONFLICT (id) DO NOTHING",
        True,
        True,
    ),
    (
        "INSERT INTO orders (id, customer_id, status, total) VALUES (7, 1, 'x', 1) ON CONFLICT (id) WHERE true "
        "DO NOTHING",
        True,
        True,
    ),
    (
        "INSERT INTO orders (status, total) VALUES ('x', 1) ON CONFLICT (tenant_id, id) DO UPDATE SET id = 8",
        True,
        False,
    ),
    (
        "INSERT INTO orders (status, total) VALUES ('x', 1) ON CONFLICT (tenant_id, id) DO UPDATE "
        "SET customer_id = 101",
        True,
        False,
    ),
]


@pytest.mark.parametrize(("statement", "shared", "scoped"), SHARED_KEY_CASES, ids=[c[0] for c in SHARED_KEY_CASES])
def test_writes_of_key_columns(statement: str, shared: bool, scoped: bool) -> None:
    assert ("tenant_unsafe_key" in codes(writer(SHARED_KEYS), statement)) == shared
    assert ("tenant_unsafe_key" in codes(writer(SCHEMA_SQL), statement)) == scoped


def test_without_a_tenant_or_a_tenant_column_keys_are_not_shared_between_tenants() -> None:
    for sql in FINDINGS.values():
        assert "tenant_unsafe_key" not in codes(writer(SHARED_KEYS), sql, tenant=None)
    silo = writer(SHARED_KEYS.replace("tenant_id text NOT NULL,", ""))
    assert "tenant_unsafe_key" not in codes(silo, FINDINGS["fuzz-2-primary-key-of-other-tenant"])


def test_the_refusal_names_the_key() -> None:
    decision = writer(SHARED_KEYS).decide(PRINCIPAL, FINDINGS["fuzz-1-foreign-key-to-other-tenant"], tenant="acme")
    messages = [r.message for r in decision.reasons if r.code == "tenant_unsafe_key"]
    assert (
        "orders.id: primary key (id) on orders does not include tenant_id, so writing it depends on other "
        "tenants' rows" in messages
    )
    assert any("foreign key (customer_id) REFERENCES customers (id)" in m for m in messages), messages


ON_CONSTRAINT = (
    SCHEMA_SQL
    + """
ALTER TABLE orders ADD CONSTRAINT orders_by_ref UNIQUE (tenant_id, ref);
ALTER TABLE orders ADD CONSTRAINT orders_ref_anywhere UNIQUE (ref);
"""
)


@pytest.mark.parametrize(
    ("constraint", "refused"),
    [("orders_by_ref", False), ("orders_ref_anywhere", True), ("orders_pkey", True), ("nope", True)],
)
def test_on_conflict_on_constraint_must_name_a_tenant_scoped_key(constraint: str, refused: bool) -> None:
    sql = (
        f"INSERT INTO orders (id, customer_id, status, total) VALUES (7, 1, 'x', 1) "
        f"ON CONFLICT ON CONSTRAINT {constraint} DO NOTHING"
    )
    assert ("tenant_unsafe_key" in codes(writer(ON_CONSTRAINT), sql)) == refused


def test_on_conflict_without_a_target_needs_every_unique_key_scoped() -> None:
    sql = "INSERT INTO orders (id, customer_id, status, total) VALUES (7, 1, 'x', 1) ON CONFLICT DO NOTHING"
    assert codes(writer(SCHEMA_SQL), sql) == []
    assert "tenant_unsafe_key" in codes(writer(ON_CONSTRAINT), sql)  # orders_ref_anywhere arbitrates too


CASCADING = SCHEMA_SQL.replace(
    "REFERENCES customers (tenant_id, id)", "REFERENCES customers (tenant_id, id) ON DELETE CASCADE ON UPDATE CASCADE"
)


def test_a_foreign_key_action_is_a_write_no_rule_names() -> None:
    """With or without a tenant: deleting a customer would delete its orders, renumbering it would rewrite them."""
    assert CASCADING != SCHEMA_SQL
    engine = writer(CASCADING)
    for tenant in ("acme", None):
        assert "foreign_key_action" in codes(engine, "DELETE FROM customers WHERE id = 1", tenant)
        assert "foreign_key_action" in codes(engine, "UPDATE customers SET id = 7 WHERE id = 1", tenant)
        assert "foreign_key_action" not in codes(engine, "UPDATE customers SET email = 'x' WHERE id = 1", tenant)


def test_the_tenant_application_schema_keys_every_table_by_tenant(postgres: LocalPostgres) -> None:
    """What tenants get (migrations.py), read back as the operator reads it: no key spans tenants, so the
    writes above stay open to agents in every isolation model."""
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS app_keys CASCADE")
        migrate(conn, "app_keys")
    try:
        schema = read_schema(postgres.dsn, "app_keys")
        assert {"customers", "orders"} <= set(schema.tables)
        for name, table in schema.tables.items():
            if name == LEDGER:
                continue
            assert table.pooled and any(k.kind == KeyKind.PRIMARY for k in table.keys), name
            keys = schema.keys[name]
            assert not (
                keys.unscoped or keys.unscoped_referenced or keys.unscoped_referencing or keys.unscoped_unique
            ), (name, keys)
        assert [k.describe() for k in schema.tables["orders"].keys if k.kind == KeyKind.FOREIGN] == [
            "foreign key orders_tenant_id_customer_id_fkey (tenant_id, customer_id) REFERENCES customers "
            "(tenant_id, id)"
        ]
    finally:
        with psycopg.connect(postgres.dsn, autocommit=True) as conn:
            conn.execute("DROP SCHEMA app_keys CASCADE")
