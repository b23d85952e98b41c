"""A grammar of agent SQL over the tenant schema (tests/policy/schema.sql), generated as text.

The statements are what an agent could send: mostly well-formed reads and writes the gate may admit, built
from the whole syntax the engine claims to understand (sublinks wherever an expression may stand, VALUES with
ORDER BY/LIMIT/OFFSET/FETCH/locking after it, set operations, CTEs, LATERAL, window functions and frames,
locking clauses of every strength, ON CONFLICT, RETURNING, OR/NOT/nested WHEREs, casts, quoted names), with
hostile fragments (dangerous functions, catalogs, other schemas, foreign operators and types) dropped at
random expression and clause positions.

One generator serves two drivers through a `Chooser`: Hypothesis (`statements()`, shrinkable, for the test
suite) and a seeded `random.Random` (`RandomChooser`, fast, for bench/fuzz.py's long campaign).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from hypothesis import strategies as st

T = TypeVar("T")

# Column types of tests/policy/schema.sql, in the generator's own small type system.
INT, NUM, TEXT, BOOL, TS, UUID = "int", "num", "text", "bool", "ts", "uuid"
TABLES: dict[str, dict[str, str]] = {
    "customers": {"id": INT, "tenant_id": TEXT, "name": TEXT, "email": TEXT, "ssn": TEXT, "created_at": TS},
    "orders": {
        "id": INT,
        "tenant_id": TEXT,
        "customer_id": INT,
        "status": TEXT,
        "total": NUM,
        "paid": BOOL,
        "ref": UUID,
        "created_at": TS,
    },
    "secrets": {"id": INT, "tenant_id": TEXT, "api_key": TEXT},
}
# What the support policy lets an agent read: the generator prefers these, so that statements get admitted.
READABLE: dict[str, tuple[str, ...]] = {
    "orders": tuple(TABLES["orders"]),
    "customers": ("id", "tenant_id", "name", "email"),
    "secrets": (),
}
# `TABLE name` forms (a SELECT * in disguise) and how many columns they return.
TABLE_FORMS = {name: len(columns) for name, columns in TABLES.items()}

LITERALS: dict[str, tuple[str, ...]] = {
    INT: ("10", "1", "0", "101", "1010", "-1", "2147483647", "'11'"),
    NUM: ("12", "12.5", "0", "1e3", "'21.00'"),
    TEXT: ("'open'", "'paid'", "'shipped'", "'acme'", "'globex'", "''", "'o%'", "E'\\\\x'", "$$open$$", "U&'\\0061'"),
    BOOL: ("true", "false", "'t'", "NULL::boolean"),
    TS: ("now()", "CURRENT_TIMESTAMP", "'2020-01-01'::timestamptz", "CURRENT_DATE", "now() - interval '1 day'"),
    UUID: ("'0b5e7c3e-2a4f-4c59-8a0e-8f4b9c1e2d3a'", "NULL::uuid"),
}
# Bound parameter values: mostly of the position's type, sometimes not (the engine must type-check them).
PARAMS: dict[str, tuple[object, ...]] = {
    INT: (10, 1010, 0, "10", "ten", 2**40, None),
    NUM: (12.5, 1, "1e3", "x"),
    TEXT: ("open", "globex", "", "'; SELECT 1; --", 7, None),
    BOOL: (True, False, "t", 1),
    TS: ("2025-01-01", "yesterday", 3),
    UUID: ("0b5e7c3e-2a4f-4c59-8a0e-8f4b9c1e2d3a", "nope"),
}
CASTS: dict[str, tuple[str, ...]] = {
    INT: ("int", "integer", "int4", "bigint", '"int4"', '"INT4"', "pg_catalog.int4", "smallint"),
    NUM: ("numeric", "numeric(10,2)", "float8", '"numeric"', "real", "double precision"),
    TEXT: (
        "text",
        "varchar",
        "varchar(3)",
        '"text"',
        '"TEXT"',
        "pg_catalog.text",
        "char(2)",
        "name",
        "regclass",
        "regproc",
        "oid",
        "xml",
        "bytea",
        '"regclass"',
        "pg_catalog.regrole",
        "public.text",
    ),
    BOOL: ("boolean", "bool", '"bool"'),
    TS: ("timestamptz", "timestamp", "date", '"timestamptz"'),
    UUID: ("uuid",),
}
# Operators: the usual ones first (most statements should be admissible), then the ones the gate must refuse.
COMPARE = ("=", "<>", "<", ">", "<=", ">=", "!=")
HOSTILE_COMPARE = (
    "~",
    "!~*",
    "~*",
    "^@",
    "OPERATOR(pg_catalog.~)",
    "OPERATOR(pg_catalog.=)",
    "OPERATOR(public.=)",
    "OPERATOR(pg_catalog.<)",
    "IS DISTINCT FROM",
    "IS NOT DISTINCT FROM",
    "@@",
    "&&",
    "#>",
    "=*",
)
ARITHMETIC = ("+", "-", "*", "/", "%")
LOCK_STRENGTHS = ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE")
AGGREGATES = {NUM: ("sum", "avg", "min", "max"), TEXT: ("min", "max")}

# Fragments the gate must never let through, by the type they stand in for. Each is small and fast.
HOSTILE: dict[str, tuple[str, ...]] = {
    INT: (
        "length(set_config('statement_timeout', '0', false))",
        "length(set_config('search_path', 'public', false))",
        "length(set_config('row_security', 'off', true))",
        "pg_advisory_lock(4242)::text::int",
        "(pg_try_advisory_lock(4242))::int",
        "pg_advisory_lock_shared(4242)",
        "lo_from_bytea(0, 'x')::int",
        "lo_create(0)::int",
        "(SELECT count(*) FROM pg_roles)::int",
        "(SELECT count(*) FROM pg_authid)::int",
        "(SELECT count(*) FROM pg_stat_activity)::int",
        "(SELECT count(*) FROM pg_policies)::int",
        "pg_backend_pid()",
        "hashtext('paybill-pooled')",
        "(SELECT count(*) FROM information_schema.tables)::int",
        "length(pg_notify('paybill_fuzz', 'x')::text)",
        "length(current_setting('is_superuser'))",
        "length(version())",
        "txid_current()::int",
        "(SELECT string_agg(rolname, ',') FROM pg_roles)::int",
        '"PG_SLEEP"(0)::text::int',
        "length(PG_SLEEP(0)::text)",
        "pg_catalog.length(pg_catalog.set_config('statement_timeout', '1', false))",
        "(SELECT max(id) FROM secrets)",
        "(SELECT count(*) FROM public.customers WHERE ssn IS NOT NULL)::int",
        "length((SELECT ssn FROM customers LIMIT 1))",
        "length(query_to_xml('select 1', true, true, '')::text)",
        "(SELECT count(*) FROM pg_catalog.pg_class)::int",
        "length(current_user::text)",
        "nextval('s')::int",
        "(SELECT id FROM other.orders LIMIT 1)",
        "length(pg_read_file('/etc/hostname'))",
        "(pg_sleep(0) IS NULL)::int",
        "length(format('%s', 1))",
        "strpos(session_user, 'p')",
        "(SELECT count(*) FROM orders WHERE tenant_id = 'globex')::int",
        "random()::int",
        "length(\"current_setting\"('search_path'))",
        "length(Set_Config('statement_timeout', '0', false))",
    ),
    TEXT: (
        "set_config('statement_timeout', '0', false)",
        "current_setting('search_path')",
        "version()",
        "(SELECT string_agg(rolname, ',') FROM pg_roles)",
        "(SELECT rolpassword FROM pg_authid LIMIT 1)",
        "(SELECT string_agg(query, ',') FROM pg_stat_activity)",
        "(SELECT string_agg(qual, ',') FROM pg_policies)",
        "query_to_xml('select * from customers', true, true, '')::text",
        "pg_notify('paybill_fuzz', 'x')::text",
        "current_user",
        "session_user",
        "CURRENT_ROLE",
        "current_schema",
        "current_database()",
        "(SELECT ssn FROM customers LIMIT 1)",
        "(SELECT api_key FROM secrets LIMIT 1)",
        "inet_server_addr()::text",
        "(SELECT name FROM public.customers LIMIT 1)",
        '"LOWER"(status)',
        "pg_catalog.\"lower\"('X')",
        "lo_from_bytea(0, 'leak')::text",
        "pg_advisory_lock(4242)::text",
        "\"upper\"('x')",
        "repeat('x', 3)",
        "(SELECT email FROM customers WHERE tenant_id = 'globex' LIMIT 1)",
        "md5('x')",
        "quote_ident('x')",
        "current_setting('role')",
        "(SELECT datname FROM pg_database LIMIT 1)::text",
        "(SELECT rolname FROM pg_catalog.pg_roles WHERE rolsuper LIMIT 1)::text",
        "string_agg(ssn, ',')",
        "'pg_authid'::regclass::text",
        "tenant_id::regrole::text",
    ),
    BOOL: (
        "pg_try_advisory_lock(4242)",
        "pg_try_advisory_xact_lock(4242)",
        "set_config('role', 'postgres', false) > ''",
        "EXISTS (SELECT 1 FROM pg_roles WHERE rolname LIKE 'agent%')",
        "pg_notify('paybill_fuzz', 'x') IS NULL",
        "pg_sleep(0) IS NULL",
        "lo_from_bytea(0, 'x') > 0",
        "EXISTS (SELECT 1 FROM pg_authid)",
        "EXISTS (SELECT 1 FROM secrets)",
        "EXISTS (SELECT 1 FROM customers WHERE ssn LIKE '%')",
        "status ~ 'o'",
        "status OPERATOR(pg_catalog.~) 'o'",
        "'a' ^@ 'a'",
        "row_security_active('orders')",
        "pg_has_role('postgres', 'member')",
        "has_table_privilege('secrets', 'select')",
        "EXISTS (SELECT 1 FROM orders WHERE tenant_id = 'globex')",
        "current_setting('is_superuser')::boolean",
    ),
}
HOSTILE[NUM] = HOSTILE[INT]
HOSTILE[TS] = (
    "pg_postmaster_start_time()",
    "clock_timestamp()",
    "statement_timestamp()",
    "(SELECT max(backend_start) FROM pg_stat_activity)",
    "pg_sleep(0)::text::timestamptz",
)
HOSTILE[UUID] = ("gen_random_uuid()", "(SELECT ref FROM orders WHERE tenant_id = 'globex' LIMIT 1)")
# Relations an agent must never reach, in a FROM list.
HOSTILE_FROM = (
    "pg_roles",
    "pg_catalog.pg_authid",
    "pg_stat_activity",
    "pg_policies",
    "information_schema.tables",
    "public.secrets",
    "secrets",
    "other.orders",
    '"Orders"',
    "pg_catalog.pg_class",
    "generate_series(1, 3) g",
    "pg_largeobject",
    "ONLY orders",
    "orders TABLESAMPLE SYSTEM (50)",
    "pg_settings",
    "lo_from_bytea(0, 'x') l",
    "rows from (pg_sleep(0)) r",
    "json_to_record('{}') AS j(a int)",
    "pg_catalog.pg_user",
    "pg_shadow",
)


class Chooser(Protocol):
    """Where the generator's choices come from (Hypothesis draws, or a seeded random.Random)."""

    def pick(self, options: Sequence[T]) -> T: ...

    def chance(self, percent: int) -> bool: ...

    def number(self, low: int, high: int) -> int: ...


class RandomChooser:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def pick(self, options: Sequence[T]) -> T:
        return options[self.rng.randrange(len(options))]

    def chance(self, percent: int) -> bool:
        return self.rng.randrange(100) < percent

    def number(self, low: int, high: int) -> int:
        return self.rng.randint(low, high)


class DrawChooser:
    """Hypothesis draws: every choice shrinks toward the first option, False and the low end."""

    def __init__(self, draw: st.DrawFn) -> None:
        self.draw = draw

    def pick(self, options: Sequence[T]) -> T:
        return self.draw(st.sampled_from(options))

    def chance(self, percent: int) -> bool:
        return self.draw(st.integers(0, 99)) >= 100 - percent

    def number(self, low: int, high: int) -> int:
        return self.draw(st.integers(low, high))


@dataclass
class Relation:
    """A name a FROM list makes visible and its columns (name -> type)."""

    name: str
    columns: dict[str, str]
    table: str | None = None


@dataclass
class Context:
    scope: list[Relation] = field(default_factory=list)
    aggregates: bool = False  # may an aggregate stand here (a target list or HAVING)
    windows: bool = False  # may a window function stand here (a target list)
    ctes: dict[str, dict[str, str]] = field(default_factory=dict)

    def inner(self, **changes: object) -> Context:
        values = {"scope": self.scope, "aggregates": False, "windows": False, "ctes": self.ctes, **changes}
        return Context(**values)  # type: ignore[arg-type]


class Grammar:
    """Builds one statement. `hostility` is the percentage of expression and clause positions that get a
    hostile fragment; `depth` bounds the nesting of subqueries and expressions."""

    def __init__(self, choose: Chooser, hostility: int = 4, depth: int = 3) -> None:
        self.c = choose
        self.hostility = hostility
        self.budget = depth
        self.aliases = 0
        self.params: list[object] = []  # values for $1..$n, in order

    # -- statements -----------------------------------------------------------------------------------

    def statement(self) -> str:
        kind = self.c.pick(("select", "select", "select", "update", "values", "setop", "delete", "insert", "with"))
        if kind == "update":
            return self.update()
        if kind == "delete":
            return self.delete()
        if kind == "insert":
            return self.insert()
        if kind == "values":
            return self.values(Context(), None)
        if kind == "setop":
            return self.set_operation(Context(), None)
        if kind == "with":
            return self.with_select(Context())
        return self.select(Context(), None)

    def select(self, ctx: Context, want: Sequence[str] | None, top: bool = True) -> str:
        """A SELECT; `want` fixes the number and types of its outputs (for IN, set operations, scalars)."""
        inner = ctx.inner(scope=[*ctx.scope])
        local: list[Relation] = []
        parts = ["SELECT"]
        from_sql = self.from_list(inner, local) if not self.c.chance(8) else ""
        inner.scope = [*local, *ctx.scope]
        if self.c.chance(8):
            parts.append(
                self.c.pick(("DISTINCT", "ALL"))
                if not local or self.c.chance(50)
                else f"DISTINCT ON ({self.expression(inner, self.any_type(), 1)})"
            )
        grouped = bool(local) and self.c.chance(20)
        targets: list[tuple[str, str]] = []
        group_keys: list[str] = []
        if grouped:
            key_type = self.any_type()
            key = self.column(inner, key_type) or self.literal(key_type)
            group_keys.append(key)
        types = list(want) if want is not None else [self.any_type() for _ in range(self.c.number(1, 3))]
        for n, kind in enumerate(types):
            if grouped and n == 0 and group_keys:
                value = group_keys[0]
            else:
                value = self.expression(
                    inner.inner(
                        scope=inner.scope, aggregates=grouped or self.c.chance(15), windows=not grouped and bool(local)
                    ),
                    kind,
                    self.budget,
                )
            targets.append((value, kind))
        if want is None and local and self.c.chance(10):
            parts.append(
                self.c.pick(("*", f"{local[0].name}.*"))
                + ", "
                + ", ".join(f"{v} AS c{n}" for n, (v, _) in enumerate(targets))
            )
        else:
            parts.append(", ".join(f"{v} AS c{n}" for n, (v, _) in enumerate(targets)))
        if from_sql:
            parts.append("FROM " + from_sql)
        if (self.c.chance(60) and local) or self.c.chance(10):
            parts.append("WHERE " + self.condition(inner, self.budget))
        if grouped:
            grouping = self.c.pick(("", "", "", "ROLLUP", "CUBE", "GROUPING SETS"))
            keys = ", ".join(group_keys)
            parts.append(f"GROUP BY {grouping} ({keys})" if grouping else f"GROUP BY {keys}")
            if self.c.chance(40):
                parts.append("HAVING " + self.condition(inner.inner(scope=inner.scope, aggregates=True), 1))
        if local and self.c.chance(10):
            parts.append(f"WINDOW w AS ({self.window_spec(inner)})")
        parts.extend(self.order_limit(inner, len(targets), top))
        if local and self.c.chance(12 if top else 6):
            parts.append(self.locking(local))
        return " ".join(parts)

    def order_limit(self, ctx: Context, outputs: int, top: bool) -> list[str]:
        parts = []
        if self.c.chance(35):
            items = []
            for _ in range(self.c.number(1, 2)):
                key = self.c.pick(
                    (
                        str(self.c.number(1, outputs)),
                        f"c{self.c.number(0, outputs - 1)}",
                        self.expression(ctx, self.any_type(), 1),
                    )
                )
                direction = self.c.pick(
                    (
                        "",
                        " DESC",
                        " ASC NULLS FIRST",
                        " USING <",
                        " USING >",
                        " USING ~<~",
                        " USING OPERATOR(pg_catalog.<)",
                        " USING ~>~",
                    )
                )
                items.append(key + direction)
            parts.append("ORDER BY " + ", ".join(items))
        if self.c.chance(30):
            parts.append("LIMIT " + self.limit_value(ctx))
        if self.c.chance(15):
            parts.append("OFFSET " + self.limit_value(ctx, "OFFSET"))
        if self.c.chance(8) and not any(p.startswith("LIMIT") for p in parts):
            parts.append(
                f"FETCH FIRST {self.limit_value(ctx, 'FETCH')} ROWS "
                + ("WITH TIES" if parts and parts[0].startswith("ORDER") and self.c.chance(30) else "ONLY")
            )
        return parts

    def limit_value(self, ctx: Context, clause: str = "LIMIT") -> str:
        """A LIMIT, OFFSET or FETCH count: a hostile fragment more often than elsewhere (a favourite hiding place)."""
        if self.c.chance(self.hostility * 3):
            return f"({self.hostile(INT)})"
        plain = ("5", "1", "0", "1000", "NULL", "2", "(SELECT 3)", "(1 + 1)")
        value = self.c.pick((*plain, "ALL") if clause == "LIMIT" else plain)
        if self.budget > 0 and self.c.chance(15):
            value = f"({self.scalar_subquery(ctx, INT)})"
        return value

    def locking(self, local: list[Relation]) -> str:
        clause = self.c.pick(LOCK_STRENGTHS)
        if self.c.chance(40):
            clause += " OF " + ", ".join(dict.fromkeys(self.c.pick(local).name for _ in range(self.c.number(1, 2))))
        if self.c.chance(20):
            clause += self.c.pick((" NOWAIT", " SKIP LOCKED"))
        if self.c.chance(10):
            clause += " " + self.c.pick(LOCK_STRENGTHS)
        return clause

    def values(self, ctx: Context, want: Sequence[str] | None, top: bool = True) -> str:
        types = list(want) if want is not None else [self.any_type() for _ in range(self.c.number(1, 2))]
        rows = []
        for _ in range(self.c.number(1, 3)):
            rows.append("(" + ", ".join(self.expression(ctx.inner(), t, 1) for t in types) + ")")
        text = "VALUES " + ", ".join(rows)
        tail = []
        if self.c.chance(35):
            tail.append(
                "ORDER BY "
                + self.c.pick(("1", "column1", "1 DESC", "1 USING ~<~", "column1 USING <", f"({self.hostile(INT)})"))
            )
        if self.c.chance(35):
            tail.append("LIMIT " + self.limit_value(ctx))
        if self.c.chance(25):
            tail.append("OFFSET " + self.limit_value(ctx, "OFFSET"))
        if self.c.chance(10) and not any(p.startswith("LIMIT") for p in tail):
            tail.append(f"FETCH FIRST {self.limit_value(ctx, 'FETCH')} ROWS ONLY")
        if self.c.chance(5):
            tail.append(self.c.pick(LOCK_STRENGTHS))
        return " ".join([text, *tail])

    def set_operation(self, ctx: Context, want: Sequence[str] | None, top: bool = True) -> str:
        types = list(want) if want is not None else [self.any_type() for _ in range(self.c.number(1, 2))]
        op = self.c.pick(("UNION", "UNION ALL", "INTERSECT", "EXCEPT", "EXCEPT ALL", "INTERSECT ALL"))
        left = self.branch(ctx, types)
        right = self.branch(ctx, types)
        tail = self.order_limit(ctx.inner(scope=[]), len(types), top) if self.c.chance(50) else []
        return " ".join([left, op, right, *tail])

    def branch(self, ctx: Context, types: Sequence[str]) -> str:
        kind = self.c.pick(("select", "values", "paren"))
        if kind == "values":
            return f"({self.values(ctx, types, top=False)})" if self.c.chance(70) else self.values_bare(ctx, types)
        body = self.select(ctx, types, top=False)
        return (
            f"({body})"
            if kind == "paren"
            or " ORDER BY " in body
            or " LIMIT " in body
            or " FOR " in body
            or " OFFSET " in body
            or " FETCH " in body
            else body
        )

    def values_bare(self, ctx: Context, types: Sequence[str]) -> str:
        return "VALUES (" + ", ".join(self.expression(ctx.inner(), t, 1) for t in types) + ")"

    def with_select(self, ctx: Context) -> str:
        ctes = dict(ctx.ctes)
        parts = []
        for n in range(self.c.number(1, 2)):
            types = [self.any_type() for _ in range(self.c.number(1, 2))]
            name = f"q{n}"
            body = self.query(ctx.inner(ctes=ctes), types)
            materialized = self.c.pick(("", "", "MATERIALIZED ", "NOT MATERIALIZED "))
            columns = {f"c{k}": t for k, t in enumerate(types)}
            if self.c.chance(30):
                parts.append(f"{name} ({', '.join(columns)}) AS {materialized}({body})")
            else:
                parts.append(f"{name} AS {materialized}({body})")
            ctes[name] = columns
        if self.c.chance(5):
            parts.append("w AS (UPDATE orders SET status = 'x' WHERE id = 10 RETURNING id)")
        recursive = "RECURSIVE " if self.c.chance(4) else ""
        tail = self.c.pick(("select", "select", "update", "delete"))
        inner = ctx.inner(ctes=ctes)
        main = (
            self.select(inner, None)
            if tail == "select"
            else (self.update(inner) if tail == "update" else self.delete(inner))
        )
        return f"WITH {recursive}" + ", ".join(parts) + " " + main

    def query(self, ctx: Context, types: Sequence[str]) -> str:
        """Any query body with the given output types: SELECT, VALUES or a set operation."""
        kind = self.c.pick(("select", "select", "select", "values", "setop", "table"))
        if kind == "table" and len(types) == TABLE_FORMS.get(self.c.pick(sorted(TABLE_FORMS)), 0):
            return self.c.pick([f"TABLE {name}" for name, width in TABLE_FORMS.items() if width == len(types)])
        if kind == "values":
            return self.values(ctx, types, top=False)
        if kind == "setop" and self.budget > 0:
            self.budget -= 1
            try:
                return self.set_operation(ctx, types, top=False)
            finally:
                self.budget += 1
        return self.select(ctx, types, top=False)

    # -- FROM -----------------------------------------------------------------------------------------

    def alias(self) -> str:
        self.aliases += 1
        return f"t{self.aliases}"

    def table_ref(self, ctx: Context, local: list[Relation]) -> str:
        if self.c.chance(self.hostility):
            fragment = self.c.pick(HOSTILE_FROM)
            local.append(Relation(fragment.split()[-1].split(".")[-1].strip('"'), {}))
            return fragment
        if ctx.ctes and self.c.chance(40):
            name = self.c.pick(sorted(ctx.ctes))
            alias = self.alias() if self.c.chance(50) else name
            local.append(Relation(alias, ctx.ctes[name]))
            return name if alias == name else f"{name} {alias}"
        table = self.c.pick(
            ("orders", "orders", "customers", "secrets") if self.c.chance(10) else ("orders", "customers")
        )
        columns = TABLES[table]
        spelled = self.c.pick((table, table, f"public.{table}", f'"{table}"', table.upper()))
        if self.c.chance(50):
            alias = self.alias()
            local.append(Relation(alias, columns, table))
            return f"{spelled} {self.c.pick(('', 'AS '))}{alias}"
        local.append(Relation(table, columns, table))
        return spelled

    def from_item(self, ctx: Context, local: list[Relation], depth: int) -> str:
        kind = self.c.pick(("table", "table", "table", "subquery", "join", "lateral", "values"))
        if kind == "subquery" and depth > 0:
            types = [self.any_type() for _ in range(self.c.number(1, 3))]
            alias = self.alias()
            body = self.query(ctx.inner(scope=[]), types)
            local.append(Relation(alias, {f"c{n}": t for n, t in enumerate(types)}))
            return f"({body}) {alias}"
        if kind == "values":
            types = [self.any_type() for _ in range(self.c.number(1, 2))]
            alias = self.alias()
            names = [f"v{n}" for n in range(len(types))]
            local.append(Relation(alias, dict(zip(names, types, strict=True))))
            return f"({self.values(ctx.inner(scope=[]), types, top=False)}) {alias} ({', '.join(names)})"
        if kind == "lateral" and depth > 0 and local:
            types = [self.any_type() for _ in range(self.c.number(1, 2))]
            alias = self.alias()
            body = self.select(ctx.inner(scope=[*local, *ctx.scope]), types, top=False)
            local.append(Relation(alias, {f"c{n}": t for n, t in enumerate(types)}))
            return f"LATERAL ({body}) {alias}"
        if kind == "join" and depth > 0:
            left = self.from_item(ctx, local, depth - 1)
            right = self.from_item(ctx, local, depth - 1)
            join = self.c.pick(("JOIN", "LEFT JOIN", "RIGHT JOIN", "FULL JOIN", "CROSS JOIN", "INNER JOIN"))
            if join == "CROSS JOIN":
                return f"{left} CROSS JOIN {right}"
            if self.c.chance(15):
                common = [c for c in local[-1].columns if len(local) > 1 and c in local[-2].columns]
                if common:
                    return f"{left} {join} {right} USING ({self.c.pick(common)})"
            condition = self.condition(ctx.inner(scope=[*local, *ctx.scope]), 1)
            return f"{left} {join} {right} ON {condition}"
        return self.table_ref(ctx, local)

    def from_list(self, ctx: Context, local: list[Relation]) -> str:
        items = [self.from_item(ctx, local, 1)]
        if self.c.chance(20):
            items.append(self.from_item(ctx, local, 1))
        return ", ".join(items)

    # -- writes ---------------------------------------------------------------------------------------

    def update(self, ctx: Context | None = None) -> str:
        ctx = ctx or Context()
        table = self.c.pick(("orders", "orders", "customers", "secrets"))
        alias = self.alias() if self.c.chance(30) else table
        target = Relation(alias, TABLES[table], table)
        local: list[Relation] = [target]
        extra = ""
        if self.c.chance(15):
            extra = " FROM " + self.from_item(ctx, local, 1)
        scope = ctx.inner(scope=[*local, *ctx.scope])
        sets = []
        writable = {
            "orders": ("status", "status", "total", "tenant_id", "paid"),
            "customers": ("email", "name", "ssn"),
            "secrets": ("api_key",),
        }[table]
        for column in dict.fromkeys(self.c.pick(writable) for _ in range(self.c.number(1, 2))):
            sets.append(f"{column} = {self.expression(scope, TABLES[table][column], 2)}")
        text = f"UPDATE {table}{'' if alias == table else ' ' + alias} SET {', '.join(sets)}{extra}"
        if not self.c.chance(8):
            text += " WHERE " + self.dml_where(scope, target)
        return text + self.returning(scope)

    def delete(self, ctx: Context | None = None) -> str:
        ctx = ctx or Context()
        table = self.c.pick(("orders", "orders", "customers"))
        alias = self.alias() if self.c.chance(30) else table
        target = Relation(alias, TABLES[table], table)
        local: list[Relation] = [target]
        using = ""
        if self.c.chance(15):
            using = " USING " + self.from_item(ctx, local, 1)
        scope = ctx.inner(scope=[*local, *ctx.scope])
        text = f"DELETE FROM {table}{'' if alias == table else ' ' + alias}{using}"
        if not self.c.chance(8):
            text += " WHERE " + self.dml_where(scope, target)
        return text + self.returning(scope)

    def insert(self) -> str:
        columns = ["id", "customer_id", "status", "total"]
        if self.c.chance(10):
            columns.append(self.c.pick(("tenant_id", "paid", "ref")))
        types = [TABLES["orders"][c] for c in columns]
        kind = self.c.pick(("values", "values", "select"))
        if kind == "values":
            rows = []
            for _ in range(self.c.number(1, 2)):
                row = []
                for column, type_ in zip(columns, types, strict=True):
                    if column == "id" and not self.c.chance(15):
                        row.append(self.c.pick(("10", "1010", "77", "78")))
                    elif column == "customer_id" and not self.c.chance(15):
                        row.append(self.c.pick(("1", "101")))
                    else:
                        row.append(self.expression(Context(), type_, 1))
                rows.append("(" + ", ".join(row) + ")")
            source = "VALUES " + ", ".join(rows)
        else:
            source = self.select(Context(), types, top=False)
        text = f"INSERT INTO orders ({', '.join(columns)}) {source}"
        target = Relation("orders", TABLES["orders"], "orders")
        if self.c.chance(50):
            conflict = self.c.pick(
                (
                    "(id)",
                    "(tenant_id, id)",
                    "(id, tenant_id)",
                    "ON CONSTRAINT orders_pkey",
                    "",
                    "(id) WHERE true",
                    "(tenant_id, id) WHERE true",
                )
            )
            if self.c.chance(40) and conflict:
                text += f" ON CONFLICT {conflict} DO NOTHING"
            elif conflict:
                excluded = Relation("excluded", TABLES["orders"], "orders")
                scope = Context(scope=[target, excluded])
                column = self.c.pick(("status", "status", "total", "tenant_id"))
                value = self.c.pick(("excluded.status", f"{self.expression(scope, TABLES['orders'][column], 1)}"))
                if column != "status" and value == "excluded.status":
                    value = f"excluded.{column}"
                text += f" ON CONFLICT {conflict} DO UPDATE SET {column} = {value}"
                if self.c.chance(40):
                    text += " WHERE " + self.condition(scope, 1)
            else:
                text += " ON CONFLICT DO NOTHING"
        return text + self.returning(Context(scope=[target]))

    def dml_where(self, ctx: Context, target: Relation) -> str:
        """WHEREs as agents write them: key equalities, ranges, OR/NOT/nesting, and the occasional trick."""
        key = f"{target.name}.id" if self.c.chance(30) else "id"
        shapes = (
            f"{key} = {self.c.pick(('10', '11', '12', '1', '1010', '101'))}",
            f"{key} = 11 OR {key} = 12",
            f"NOT ({key} = 11)",
            f"{key} IN (10, 11, 1010)",
            f"({key} = 10 OR {key} = 1010) AND {self.condition(ctx, 1)}",
            f"{key} BETWEEN 10 AND 13",
            "id = id",
            "tenant_id = tenant_id",
            "id IS NOT NULL",
            f"EXISTS (SELECT 1 FROM {self.c.pick(('customers', 'orders'))})",
            "true",
            "tenant_id = 'globex'",
            f"{key} = 10 OR true",
            f"NOT ({key} <> 10 AND {key} <> 1010)",
        )
        if self.c.chance(40):
            return self.condition(ctx, 2)
        return self.c.pick(shapes)

    def returning(self, ctx: Context) -> str:
        if not self.c.chance(35):
            return ""
        items = []
        for _ in range(self.c.number(1, 2)):
            items.append(self.c.pick(("*", self.expression(ctx.inner(scope=ctx.scope), self.any_type(), 1))))
        return " RETURNING " + ", ".join(items)

    # -- expressions ----------------------------------------------------------------------------------

    def any_type(self) -> str:
        return self.c.pick((INT, TEXT, INT, NUM, BOOL, TS, TEXT, UUID))

    def hostile(self, kind: str) -> str:
        return self.c.pick(HOSTILE.get(kind, HOSTILE[INT]))

    def column(self, ctx: Context, kind: str, readable_only: bool = True) -> str | None:
        candidates = []
        for relation in ctx.scope:
            for name, type_ in relation.columns.items():
                if type_ != kind:
                    continue
                if (
                    readable_only
                    and relation.table is not None
                    and name not in READABLE[relation.table]
                    and not self.c.chance(3)
                ):
                    continue
                candidates.append((relation.name, name))
        if not candidates:
            return None
        relation, name = self.c.pick(candidates)
        if sum(name in r.columns for r in ctx.scope) > 1 and not self.c.chance(10):
            return self.c.pick((f"{relation}.{name}", f'{relation}."{name}"'))  # unqualified would be ambiguous
        spelled = self.c.pick((name, name, name, f"{relation}.{name}", f'"{name}"', f'{relation}."{name}"'))
        return spelled

    def literal(self, kind: str) -> str:
        if self.c.chance(6):
            self.params.append(self.c.pick(PARAMS[kind]))
            return f"${len(self.params)}"
        return self.c.pick(LITERALS[kind])

    def expression(self, ctx: Context, kind: str, depth: int) -> str:
        if self.c.chance(self.hostility):
            return self.hostile(kind)
        if depth <= 0 or self.c.chance(30):
            column = self.column(ctx, kind) if self.c.chance(70) else None
            return column or self.literal(kind)
        if kind == BOOL:
            return self.condition(ctx, depth - 1)
        shape = self.c.pick(
            (
                "column",
                "function",
                "arith",
                "case",
                "coalesce",
                "cast",
                "subquery",
                "window",
                "aggregate",
                "paren",
                "nullif",
                "greatest",
                "odd",
            )
        )
        sub = depth - 1
        if shape == "odd":
            return self.odd(ctx, kind, sub)
        if shape == "function" and kind in (TEXT,):
            name = self.c.pick(("lower", "upper", "lower", "pg_catalog.lower", '"lower"', "LOWER"))
            return f"{name}({self.expression(ctx, TEXT, sub)})"
        if shape == "function" and kind == TS:
            unit = self.c.pick(("'day'", "'month'"))
            return f"date_trunc({unit}, {self.expression(ctx, TS, sub)})"
        if shape == "arith" and kind in (INT, NUM):
            op = self.c.pick(ARITHMETIC)
            right = self.expression(ctx, kind, sub)
            return f"({self.expression(ctx, kind, sub)} {op} {right if op not in '/%' else '7'})"
        if shape == "arith" and kind == TEXT:
            return f"({self.expression(ctx, TEXT, sub)} || {self.expression(ctx, self.any_type(), sub)})"
        if shape == "case":
            arms = " ".join(
                f"WHEN {self.condition(ctx, sub)} THEN {self.expression(ctx, kind, sub)}"
                for _ in range(self.c.number(1, 2))
            )
            return f"CASE {arms} ELSE {self.expression(ctx, kind, sub)} END"
        if shape == "coalesce":
            return f"coalesce({self.expression(ctx, kind, sub)}, {self.expression(ctx, kind, sub)})"
        if shape == "nullif":
            return f"NULLIF({self.expression(ctx, kind, sub)}, {self.expression(ctx, kind, sub)})"
        if shape == "greatest" and kind != BOOL:
            return (
                f"{self.c.pick(('GREATEST', 'LEAST'))}({self.expression(ctx, kind, sub)}, "
                f"{self.expression(ctx, kind, sub)})"
            )
        if shape == "cast":
            source = self.c.pick((kind, TEXT, INT))
            target = self.c.pick(CASTS[kind])
            value = self.expression(ctx, source, sub)
            return self.c.pick((f"CAST({value} AS {target})", f"({value})::{target}"))
        if shape == "subquery" and self.budget > 0:
            return f"({self.scalar_subquery(ctx, kind)})"
        if shape == "window" and ctx.windows:
            return self.window_call(ctx, kind)
        if shape == "aggregate" and ctx.aggregates:
            return self.aggregate(ctx, kind)
        if shape == "paren":
            return f"({self.expression(ctx, kind, sub)})"
        column = self.column(ctx, kind)
        return column or self.literal(kind)

    def odd(self, ctx: Context, kind: str, depth: int) -> str:
        """Rarer syntax that still has the requested type: whole-row references, typed literals, COLLATE,
        subscripts, ARRAY(subquery), row comparisons, field selection, quoted names in odd case."""
        relations = [r for r in ctx.scope if r.table is not None]
        value = self.expression(ctx, kind, depth)
        forms = {
            TEXT: [f'{value} COLLATE "C"', "text 'x'", f"(ARRAY[{value}])[1]", "'x'::\"Text\""],
            INT: [
                "int4 '7'",
                f"(ARRAY[{value}, 1])[1]",
                "array_length(ARRAY(SUBQUERY), 1)",
                f"(SELECT count(*) FROM (TABLE {self.c.pick(('orders', 'customers'))}) x)::int",
            ],
            NUM: ["numeric '1.5'", f"({value})::numeric(5, 1)"],
            TS: ["timestamptz '2025-01-01'", "date '2025-01-01'", f"{value} AT TIME ZONE 'UTC'"],
            BOOL: [f"ROW({value}, 1) = ROW({value}, 1)", "(1, 'a') < (2, 'b')", f"{value} IS NOT TRUE"],
            UUID: ["uuid '0b5e7c3e-2a4f-4c59-8a0e-8f4b9c1e2d3a'"],
        }[kind]
        if relations:
            relation = self.c.pick(relations)
            forms += {
                TEXT: [
                    f"{relation.name}::text",
                    f"row_to_json({relation.name})::text",
                    f"({relation.name}).name",
                    f'({relation.name})."Name"',
                    f'{relation.name}."Email"',
                    f'{relation.name}."ID"::text',
                ],
                INT: [f"({relation.name}).id", f"length({relation.name}::text)"],
                BOOL: [f"{relation.name} IS NOT NULL", f"{relation.name} = {relation.name}"],
            }.get(kind, [])
        form = self.c.pick(forms)
        if "SUBQUERY" in form:
            if self.budget <= 0:
                return value
            self.budget -= 1
            try:
                form = form.replace("SUBQUERY", self.select(ctx.inner(), [INT], top=False))
            finally:
                self.budget += 1
        return form

    def scalar_subquery(self, ctx: Context, kind: str) -> str:
        self.budget -= 1
        try:
            body = self.query(ctx.inner(scope=ctx.scope), [kind])
        finally:
            self.budget += 1
        if " LIMIT " not in body and " FETCH " not in body and self.c.chance(70):
            if body.startswith("VALUES") or " UNION " in body or " INTERSECT " in body or " EXCEPT " in body:
                body = f"SELECT * FROM ({body}) s LIMIT 1"
            else:
                body += " LIMIT 1"
        return body

    def aggregate(self, ctx: Context, kind: str) -> str:
        inner = ctx.inner(scope=ctx.scope)
        if kind == INT:
            argument = self.c.pick(
                (
                    "*",
                    self.expression(inner, self.any_type(), 1),
                    f"DISTINCT {self.expression(inner, self.any_type(), 1)}",
                )
            )
            call = f"count({argument})"
        elif kind in AGGREGATES:
            call = f"{self.c.pick(AGGREGATES[kind])}({self.expression(inner, kind, 1)}"
            if self.c.chance(20):
                call += f" ORDER BY {self.expression(inner, self.any_type(), 1)}"
            call += ")"
        else:
            return self.expression(inner, kind, 0)
        if self.c.chance(20):
            call += f" FILTER (WHERE {self.condition(inner, 1)})"
        return call

    def window_call(self, ctx: Context, kind: str) -> str:
        inner = ctx.inner(scope=ctx.scope)
        if kind == INT:
            call = self.c.pick(("count(*)", f"count({self.expression(inner, INT, 1)})", "row_number()", "rank()"))
        elif kind == NUM:
            call = f"{self.c.pick(('sum', 'avg', 'min', 'max'))}({self.expression(inner, NUM, 1)})"
        elif kind == TEXT:
            call = f"{self.c.pick(('min', 'max', 'lag', 'first_value'))}({self.expression(inner, TEXT, 1)})"
        else:
            return self.expression(inner, kind, 0)
        if self.c.chance(15):
            return f"{call} OVER ()"
        return f"{call} OVER ({self.window_spec(inner)})"

    def window_spec(self, ctx: Context) -> str:
        parts = []
        if self.c.chance(60):
            parts.append("PARTITION BY " + self.expression(ctx, self.any_type(), 1))
        if self.c.chance(60):
            parts.append(
                "ORDER BY "
                + self.expression(ctx, self.any_type(), 1)
                + self.c.pick(("", " DESC", " USING <", " USING ~<~"))
            )
        if self.c.chance(40):
            unit = self.c.pick(("ROWS", "RANGE", "GROUPS"))
            offset = self.c.pick(("1", "2", "0", f"({self.hostile(INT)})", f"({self.scalar_subquery(ctx, INT)})"))
            start = self.c.pick((f"{offset} PRECEDING", "UNBOUNDED PRECEDING", "CURRENT ROW"))
            end = self.c.pick(("CURRENT ROW", f"{offset} FOLLOWING", "UNBOUNDED FOLLOWING"))
            parts.append(
                f"{unit} BETWEEN {start} AND {end}" + self.c.pick(("", "", " EXCLUDE CURRENT ROW", " EXCLUDE TIES"))
            )
        return " ".join(parts)

    def condition(self, ctx: Context, depth: int) -> str:
        if self.c.chance(self.hostility):
            return self.hostile(BOOL)
        shape = self.c.pick(
            (
                "compare",
                "compare",
                "compare",
                "and",
                "or",
                "not",
                "in_list",
                "null",
                "like",
                "between",
                "exists",
                "in_subquery",
                "any",
                "bool_column",
                "any_array",
                "hostile_op",
            )
        )
        sub = depth - 1
        kind = self.c.pick((INT, TEXT, NUM, INT, TS))
        if depth <= 0 and shape in ("and", "or", "not", "exists", "in_subquery", "any"):
            shape = "compare"
        if shape == "compare":
            return f"{self.expression(ctx, kind, sub)} {self.c.pick(COMPARE)} {self.expression(ctx, kind, sub)}"
        if shape in ("and", "or"):
            return f"({self.condition(ctx, sub)} {shape.upper()} {self.condition(ctx, sub)})"
        if shape == "not":
            return f"NOT ({self.condition(ctx, sub)})"
        if shape == "in_list":
            items = ", ".join(self.expression(ctx, kind, 0) for _ in range(self.c.number(1, 3)))
            return f"{self.expression(ctx, kind, sub)} {self.c.pick(('IN', 'NOT IN'))} ({items})"
        if shape == "null":
            return f"{self.expression(ctx, self.any_type(), sub)} IS {self.c.pick(('', 'NOT '))}NULL"
        if shape == "like":
            return (
                f"{self.expression(ctx, TEXT, sub)} {self.c.pick(('LIKE', 'ILIKE', 'NOT LIKE', 'NOT ILIKE'))} "
                f"{self.c.pick(LITERALS[TEXT])}"
            )
        if shape == "between":
            return (
                f"{self.expression(ctx, kind, sub)} {self.c.pick(('BETWEEN', 'NOT BETWEEN'))} "
                f"{self.expression(ctx, kind, 0)} AND {self.expression(ctx, kind, 0)}"
            )
        if shape == "exists" and self.budget > 0:
            self.budget -= 1
            try:
                body = self.query(ctx.inner(scope=ctx.scope), [self.any_type()])
            finally:
                self.budget += 1
            return f"{self.c.pick(('', 'NOT '))}EXISTS ({body})"
        if shape in ("in_subquery", "any") and self.budget > 0:
            self.budget -= 1
            try:
                body = self.query(ctx.inner(scope=ctx.scope), [kind])
            finally:
                self.budget += 1
            left = self.expression(ctx, kind, sub)
            if shape == "in_subquery":
                return f"{left} {self.c.pick(('IN', 'NOT IN'))} ({body})"
            op = self.c.pick(COMPARE + HOSTILE_COMPARE[:8] if self.c.chance(25) else COMPARE)
            return f"{left} {op} {self.c.pick(('ANY', 'ALL', 'SOME'))} ({body})"
        if shape == "any_array":
            items = ", ".join(self.expression(ctx, kind, 0) for _ in range(self.c.number(1, 3)))
            op = self.c.pick(COMPARE + HOSTILE_COMPARE[:6] if self.c.chance(20) else COMPARE)
            return f"{self.expression(ctx, kind, sub)} {op} {self.c.pick(('ANY', 'ALL'))} (ARRAY[{items}])"
        if shape == "hostile_op" and self.c.chance(max(self.hostility * 5, 1)):
            op = self.c.pick(HOSTILE_COMPARE)
            return f"{self.expression(ctx, TEXT, sub)} {op} {self.expression(ctx, TEXT, sub)}"
        column = self.column(ctx, BOOL)
        return column or self.c.pick(("true", "false", "1 = 1"))


@st.composite
def statements(draw: st.DrawFn, hostility: int = 4) -> tuple[str, list[object]]:
    """Hypothesis strategy: one generated statement as SQL text, and the values of its $n parameters."""
    grammar = Grammar(DrawChooser(draw), hostility)
    return grammar.statement(), grammar.params
