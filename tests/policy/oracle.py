"""The fuzzing oracle: run what the gate admitted as a role that bypasses row-level security, and judge it.

The database's own defences (RLS, column grants) are out of the way on purpose: the oracle role has
BYPASSRLS and every privilege on the tables, so whatever the engine's rewrite lets through shows. Each
admitted statement (the engine's rewritten SQL, `decision.sql`) runs twice in one transaction that is never
committed:

- pass B (in a savepoint, then rolled back): against a world where the other tenant's rows are deleted and
  the columns the policy does not let the agent read are scrambled;
- pass A: against the real data.

A statement that keeps to the tenant and to the readable columns returns the same rows (and the same error,
and leaves the tenant's rows in the same state) in both passes. Pass A is also checked for side effects
inside the transaction: which rows changed and how (only the tenant's rows, only columns an update rule
allows, inserts and deletes only where rules allow them), which rows are locked (seen from a second
connection with SKIP LOCKED), large objects, locks in pg_locks, every setting in pg_settings, and pending
NOTIFYs (PREPARE TRANSACTION refuses a transaction that sent one). Then the rewritten SQL itself is parsed
again and every function, operator, sort operator, cast and relation in it is checked against the policy
independently of the engine.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from pglast.parser import ParseError, parse_sql_protobuf
from postgast import pg_query_pb2 as pb
from psycopg import sql

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.database.server import LocalPostgres
from paybill.policy.check import load_policy

HERE = Path(__file__).parent
SCHEMA_SQL = (HERE / "schema.sql").read_text()
TENANT, OTHER = "acme", "globex"
ORACLE_ROLE = "paybill_fuzz_oracle"
ORACLE_PASSWORD = "fuzz-oracle"  # a throwaway server's throwaway role
# Strings that exist only in data the agent must never see (the other tenant's rows, unreadable columns).
HIDDEN_MARKERS = (OTHER, "SSN-", "APIKEY-")

# Independent of the engine's own lists: what the rewritten SQL may contain.
SAFE_OPERATORS = frozenset(
    {"=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "||", "~~", "!~~", "~~*", "!~~*", "->", "->>"}
)
RANGE_KINDS = frozenset({pb.AEXPR_BETWEEN, pb.AEXPR_NOT_BETWEEN, pb.AEXPR_BETWEEN_SYM, pb.AEXPR_NOT_BETWEEN_SYM})
SORT_OPERATORS = frozenset({"<", ">"})
SAFE_TYPES = frozenset(
    {
        "int2",
        "int4",
        "int8",
        "smallint",
        "integer",
        "int",
        "bigint",
        "numeric",
        "decimal",
        "float4",
        "float8",
        "real",
        "text",
        "varchar",
        "bpchar",
        "char",
        "bool",
        "boolean",
        "date",
        "time",
        "timestamp",
        "timestamptz",
        "interval",
        "uuid",
        "json",
        "jsonb",
    }
)
TIME_FUNCTIONS = frozenset(
    {
        pb.SVFOP_CURRENT_DATE,
        pb.SVFOP_CURRENT_TIME,
        pb.SVFOP_CURRENT_TIME_N,
        pb.SVFOP_CURRENT_TIMESTAMP,
        pb.SVFOP_CURRENT_TIMESTAMP_N,
        pb.SVFOP_LOCALTIME,
        pb.SVFOP_LOCALTIME_N,
        pb.SVFOP_LOCALTIMESTAMP,
        pb.SVFOP_LOCALTIMESTAMP_N,
    }
)
# Nodes that reach outside the tenant's tables whatever their arguments are.
FORBIDDEN_NODES = frozenset(
    {
        "RangeFunction",
        "RangeTableFunc",
        "RangeTableSample",
        "CurrentOfExpr",
        "XmlExpr",
        "XmlSerialize",
        "JsonTable",
        "IntoClause",
    }
)


# -- the database ---------------------------------------------------------------------------------------


def start_server(server: LocalPostgres) -> LocalPostgres:
    """Start with prepared transactions on (the NOTIFY detector needs them)."""
    server.start()
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET max_prepared_transactions = 8")
    server.stop()
    server.start()
    return server


@contextlib.contextmanager
def fuzz_server() -> Iterator[LocalPostgres]:
    """A throwaway server in a directory the postgres user can enter; stopped and removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="paybill-fuzz-"))
    os.chmod(directory, 0o755)
    server = LocalPostgres(directory)
    try:
        yield start_server(server)
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


def create_database(admin_dsn: str, name: str = "policy_fuzz") -> str:
    """The tenant schema with two tenants' rows, RLS on (no policy: a normal role sees nothing), and the
    oracle role that bypasses it. Returns a DSN logging in as the oracle role."""
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ORACLE_ROLE,)).fetchone()
        verb = "ALTER" if exists else "CREATE"
        conn.execute(
            sql.SQL(verb + " ROLE {} LOGIN BYPASSRLS NOSUPERUSER PASSWORD {}").format(
                sql.Identifier(ORACLE_ROLE), sql.Literal(ORACLE_PASSWORD)
            )
        )
    dsn = psycopg.conninfo.make_conninfo(admin_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(SCHEMA_SQL)
        seed(conn)
        for table in ("customers", "orders", "secrets"):
            conn.execute(sql.SQL("ALTER TABLE {} ENABLE ROW LEVEL SECURITY").format(sql.Identifier(table)))
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(sql.Identifier(ORACLE_ROLE)))
        conn.execute(
            sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}").format(
                sql.Identifier(ORACLE_ROLE)
            )
        )
    return psycopg.conninfo.make_conninfo(dsn, user=ORACLE_ROLE, password=ORACLE_PASSWORD)


def seed(conn: psycopg.Connection) -> None:
    """Every text value carries its tenant's name; SSNs and API keys carry markers found nowhere else."""
    for t, tenant in enumerate((TENANT, OTHER)):
        conn.execute(
            "INSERT INTO secrets (id, tenant_id, api_key) VALUES (%s, %s, %s)",
            (t + 1, tenant, f"APIKEY-{tenant}-{t + 1}"),
        )
        for n in range(1, 6):
            key = t * 100 + n
            conn.execute(
                "INSERT INTO customers (id, tenant_id, name, email, ssn, created_at) VALUES (%s, %s, %s, %s, %s, %s)",
                (
                    key,
                    tenant,
                    f"{tenant}-customer-{n}",
                    f"c{n}@{tenant}.test",
                    f"SSN-{tenant}-{key:05d}",
                    f"2024-0{n}-0{t + 1} 10:00:00+00",
                ),
            )
            for k in range(4):
                conn.execute(
                    "INSERT INTO orders (id, tenant_id, customer_id, status, total, paid, ref, created_at) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        key * 10 + k,
                        tenant,
                        key,
                        ("open", "paid", "shipped", "canceled")[k],
                        10 * (k + 1) + n + 100 * t,
                        k == 1,
                        uuid.uuid5(uuid.NAMESPACE_OID, f"{tenant}{key}{k}"),
                        f"2025-0{k + 1}-{n + 10} 12:00:00+00",
                    ),
                )


# -- what the policy allows, read from the spec on its own ---------------------------------------------


@dataclass(frozen=True)
class Allowed:
    """Per table: the columns the agent may read and update, and whether it may insert and delete."""

    read: dict[str, frozenset[str]]
    update: dict[str, frozenset[str]]
    insert: frozenset[str]
    delete: frozenset[str]
    functions: frozenset[str]
    # (action, table) -> the rows a rule lets the action reach, as SQL (the OR of its rules' rowFilters),
    # where every allowing rule has one; no entry: every row of the tenant
    row_filters: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def from_spec(cls, spec: AgentPolicySpec, columns: dict[str, tuple[str, ...]]) -> Allowed:
        def granted(action: str, table: str) -> frozenset[str]:
            allowed: set[str] = set()
            denied: set[str] = set()
            for rule in spec.rules:
                if str(action) not in [str(a) for a in rule.actions] or not ({table, "*"} & set(rule.tables)):
                    continue
                names = set(columns[table]) if "*" in rule.columns else set(rule.columns) & set(columns[table])
                (allowed if rule.effect == "allow" else denied).update(names)
            return frozenset(allowed - denied - {"tenant_id"})

        def whole(action: str, table: str) -> bool:
            rules = [r for r in spec.rules if action in [str(a) for a in r.actions] and {table, "*"} & set(r.tables)]
            return any(r.effect == "allow" for r in rules) and not any(
                r.effect == "deny" and "*" in r.columns for r in rules
            )

        def row_filter(action: str, table: str) -> str | None:
            rules = [
                r
                for r in spec.rules
                if r.effect == "allow" and action in [str(a) for a in r.actions] and {table, "*"} & set(r.tables)
            ]
            if not rules or any(r.rowFilter is None for r in rules):
                return None
            return " OR ".join(f"({r.rowFilter})" for r in rules)

        tables = list(columns)
        filters = {
            (a, t): f for a in ("select", "update", "delete") for t in tables if (f := row_filter(a, t)) is not None
        }
        return cls(
            read={t: granted("select", t) | {"tenant_id"} for t in tables},
            update={t: granted("update", t) for t in tables},
            insert=frozenset(t for t in tables if whole("insert", t)),
            delete=frozenset(t for t in tables if whole("delete", t)),
            functions=frozenset(spec.functions),
            row_filters=filters,
        )

    def may_lock(self, table: str) -> bool:
        """A row lock is a write intent: the table needs an update (or delete) rule."""
        return bool(self.update[table]) or table in self.delete


# -- static checks on the rewritten SQL ----------------------------------------------------------------


def static_problems(statement: str, allowed: Allowed, tables: Iterable[str]) -> list[str]:
    """What the SQL that runs names that the policy does not allow, found by walking every field of the tree."""
    try:
        tree = pb.ParseResult.FromString(parse_sql_protobuf(statement))
    except ParseError as error:
        return [f"the rewritten SQL does not parse: {error}"]
    messages = list(_messages(tree))
    ctes = {m.ctename for m in messages if isinstance(m, pb.CommonTableExpr)}
    # FOR UPDATE OF names FROM items (aliases), not relations: the items themselves are checked where they stand
    aliases = {
        (n.range_var.relname, n.range_var.location)
        for m in messages
        if isinstance(m, pb.LockingClause)
        for n in m.locked_rels
    }
    known = set(tables)
    problems = []
    for message in messages:
        name = type(message).__name__
        if name in FORBIDDEN_NODES:
            problems.append(f"{name} in the statement")
        elif isinstance(message, pb.FuncCall):
            names = _strings(message.funcname)
            if not (names[-1] in allowed.functions and names[:-1] in ([], ["pg_catalog"])):
                problems.append(f"calls function {'.'.join(names)} (not in the policy's allowlist)")
        elif isinstance(message, pb.A_Expr) and message.kind not in RANGE_KINDS:
            names = _strings(message.name)
            if len(names) != 1 or names[0] not in SAFE_OPERATORS:
                problems.append(f"uses operator {'.'.join(names)}")
        elif isinstance(message, pb.SortBy) and message.use_op:
            names = _strings(message.use_op)
            if len(names) != 1 or names[0] not in SORT_OPERATORS:
                problems.append(f"sorts with operator {'.'.join(names)}")
        elif isinstance(message, pb.TypeName):
            names = _strings(message.names)
            if names[-1] not in SAFE_TYPES or names[:-1] not in ([], ["pg_catalog"]) or message.array_bounds:
                problems.append(f"casts to {'.'.join(names)}")
        elif isinstance(message, pb.RangeVar) and (message.relname, message.location) not in aliases:
            local = not message.catalogname and message.schemaname in ("", "public")
            if not local or message.relname not in known | ctes:
                problems.append(
                    f"reads relation {message.schemaname + '.' if message.schemaname else ''}{message.relname}"
                )
        elif isinstance(message, pb.SQLValueFunction) and message.op not in TIME_FUNCTIONS:
            problems.append(f"reads session information ({pb.SQLValueFunctionOp.Name(message.op)})")
    return problems


def _messages(message: Any) -> Iterator[Any]:
    yield message
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        for item in value if descriptor.is_repeated else (value,):
            inner = (
                getattr(item, item.WhichOneof("node"))
                if isinstance(item, pb.Node) and item.WhichOneof("node")
                else item
            )
            if isinstance(item, pb.Node) and not item.WhichOneof("node"):
                continue
            yield from _messages(inner)


def _strings(nodes: Any) -> list[str]:
    return [n.string.sval for n in nodes if n.WhichOneof("node") == "string"]


# -- running and judging ---------------------------------------------------------------------------------


@dataclass
class Run:
    """One execution of the statement: its rows (as sorted text) or its error, and the tenant's rows after."""

    error: tuple[str, str] | None = None
    rows: list[str] = field(default_factory=list)
    rowcount: int = -1
    state: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)


class Oracle:
    """Judges admitted statements for one policy. `check` returns the problems (empty: the statement kept
    to the tenant)."""

    def __init__(self, dsn: str, spec: AgentPolicySpec, timeout_ms: int = 3000) -> None:
        self.columns = {t: tuple(c) for t, c in _schema_columns().items()}
        self.allowed = Allowed.from_spec(spec, self.columns)
        self.max_rows_written = spec.limits.maxRowsWritten
        self.timeout_ms = timeout_ms
        self.dsn = dsn
        self.conn, self.probe = self._connect(), self._connect()
        self._settings: tuple[str | None, dict[str, str]] = (None, {})
        self._filtered: set[tuple[str, str, int]] = set()
        self._unreachable: dict[str, set[tuple[str, str, int]]] = {}
        self._names = (f"paybill_fuzz_{os.getpid()}_{n}" for n in itertools.count())
        prepared = self.conn.execute("SELECT current_setting('max_prepared_transactions')::int").fetchone()[0]
        if not prepared:
            raise RuntimeError("the oracle needs max_prepared_transactions > 0 to detect NOTIFY")

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True, cursor_factory=psycopg.RawCursor)  # $n, as the guard
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self.timeout_ms)))
        conn.execute("SET search_path = pg_catalog, public")
        return conn

    def close(self) -> None:
        self.conn.close()
        self.probe.close()

    def check(self, statement: str, params: list[Any] | None = None, kind: str = "select") -> list[str]:
        """`kind` is the statement's kind as the engine saw it (a locking read is bounded as a write is)."""
        problems = static_problems(statement, self.allowed, self.columns)
        try:
            problems += self._dynamic(statement, params or [], kind == "select")
        except psycopg.OperationalError as error:  # the statement ended the session (or the server)
            problems.append(f"breaks the session: {error}")
            self.close()
            self.conn, self.probe = self._connect(), self._connect()
        return list(dict.fromkeys(problems))

    def _dynamic(self, statement: str, params: list[Any], read: bool) -> list[str]:
        conn = self.conn
        problems: list[str] = []
        conn.execute("BEGIN")
        try:
            baseline = self._session(conn)
            conn.execute("SAVEPOINT hidden")
            self._hide(conn)
            hidden = self._run(statement, params, "hidden")
            conn.execute("ROLLBACK TO SAVEPOINT hidden")
            before = self._rows(conn)
            self._unreachable = self._outside_filters(conn)
            real = self._run(statement, params, "real")
            after = self._rows(conn)
            problems += self._writes(before, after)
            problems += self._locks(
                {key[0] for key in set(before) | set(after) if before.get(key) != after.get(key)}, read
            )
            problems += _compare(hidden, real, self.allowed.read, self._filtered)
            sent = (statement + repr(params)).lower()  # a marker the agent sent itself reveals nothing
            problems += [
                f"output shows hidden data ({marker})"
                for marker in HIDDEN_MARKERS
                if marker.lower() not in sent and any(marker.lower() in row.lower() for row in real.rows)
            ]
            if real.error and any(m.lower() in real.error[1].lower() and m.lower() not in sent for m in HIDDEN_MARKERS):
                problems.append(f"error text shows hidden data: {real.error[1][:120]}")
            problems += [
                f"leaves {what} behind: {before_value!r} -> {after_value!r}"
                for what, before_value, after_value in _changes(baseline, self._session(conn))
            ]
            problems += self._notify(conn)
        finally:
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            self._reset()
        return problems

    def _run(self, statement: str, params: list[Any], savepoint: str) -> Run:
        conn = self.conn
        conn.execute(sql.SQL("SAVEPOINT {}").format(sql.Identifier(savepoint + "_run")))
        timer = threading.Timer(self.timeout_ms / 1000 * 2, conn.cancel_safe)
        timer.start()
        run = Run()
        try:
            cursor = conn.cursor()
            cursor.execute(statement, params or None, prepare=False)
            run.rowcount = cursor.rowcount
            run.rows = sorted(repr(row) for row in (cursor.fetchall() if cursor.description else []))
        except psycopg.Error as error:
            diag = error.diag
            run.error = (diag.sqlstate or type(error).__name__, diag.message_primary or str(error))
            conn.execute(sql.SQL("ROLLBACK TO SAVEPOINT {}").format(sql.Identifier(savepoint + "_run")))
        finally:
            timer.cancel()
        run.state = {key: row for key, row in self._rows(conn).items() if row.get("tenant_id") == TENANT}
        return run

    def _hide(self, conn: psycopg.Connection) -> None:
        """Delete the other tenant's rows and the rows no select rule's rowFilter admits; scramble every column
        the agent may not read."""
        for table in ("orders", "customers", "secrets"):
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE tenant_id <> {}").format(sql.Identifier(table), sql.Literal(TENANT))
            )
        self._filtered = set()
        for (action, table), row_filter in self.allowed.row_filters.items():
            if action == "select":
                deleted = conn.execute(
                    sql.SQL("DELETE FROM {} WHERE ({}) IS NOT TRUE RETURNING tenant_id, id").format(
                        sql.Identifier(table), sql.SQL(row_filter)
                    )
                )  # the policy's own predicate, trusted here
                self._filtered |= {(table, tenant, key) for tenant, key in deleted}
        types = _schema_types()
        for table, columns in self.columns.items():
            hidden = [c for c in columns if c not in self.allowed.read[table] and c != "tenant_id"]
            if hidden:
                sets = sql.SQL(", ").join(
                    sql.SQL("{} = {}").format(sql.Identifier(c), _scramble(c, types[table][c])) for c in hidden
                )
                conn.execute(sql.SQL("UPDATE {} SET {}").format(sql.Identifier(table), sets))

    def _outside_filters(self, conn: psycopg.Connection) -> dict[str, set[tuple[str, str, int]]]:
        """Per write action, the tenant's rows its rules' rowFilters keep out of reach."""
        unreachable: dict[str, set[tuple[str, str, int]]] = {"update": set(), "delete": set()}
        for (action, table), row_filter in self.allowed.row_filters.items():
            if action in unreachable:
                rows = conn.execute(
                    sql.SQL("SELECT tenant_id, id FROM {} WHERE ({}) IS NOT TRUE").format(
                        sql.Identifier(table), sql.SQL(row_filter)
                    )
                )
                unreachable[action] |= {(table, tenant, key) for tenant, key in rows}
        return unreachable

    def _rows(self, conn: psycopg.Connection) -> dict[tuple[str, str, int], dict[str, Any]]:
        rows = {}
        for table in self.columns:
            query = sql.SQL("SELECT row_to_json(t)::text FROM {} t").format(sql.Identifier(table))
            for (text,) in conn.execute(query):
                row = json.loads(text)
                rows[(table, row["tenant_id"], row["id"])] = row  # tables are keyed (tenant_id, id) or by id
        return rows

    def _writes(self, before: dict, after: dict) -> list[str]:
        problems = []
        for key in sorted(set(before) | set(after), key=str):
            old, new = before.get(key), after.get(key)
            if old == new:
                continue
            table = key[0]
            if old is None:
                if new["tenant_id"] != TENANT:
                    problems.append(f"inserts a {table} row of tenant {new['tenant_id']}")
                elif table not in self.allowed.insert:
                    problems.append(f"inserts into {table} without an insert rule")
            elif new is None:
                if old["tenant_id"] != TENANT:
                    problems.append(f"deletes a {table} row of tenant {old['tenant_id']}")
                elif table not in self.allowed.delete:
                    problems.append(f"deletes from {table} without a delete rule")
                elif key in self._unreachable.get("delete", ()):
                    problems.append(f"deletes a {table} row its delete rules' rowFilter excludes")
            else:
                changed = sorted(c for c in old if old[c] != new.get(c))
                if old["tenant_id"] != TENANT:
                    problems.append(f"changes a {table} row of tenant {old['tenant_id']} ({', '.join(changed)})")
                elif set(changed) - self.allowed.update[table]:
                    problems.append(
                        f"changes {table}.{', '.join(sorted(set(changed) - self.allowed.update[table]))}"
                        " without an update rule"
                    )
                elif key in self._unreachable.get("update", ()):
                    problems.append(f"changes a {table} row its update rules' rowFilter excludes")
        return problems

    def _locks(self, written: set[str], read: bool) -> list[str]:
        """Rows the statement's transaction holds locked, seen from a second connection with SKIP LOCKED.

        FOR UPDATE skips a row under any lock, FOR NO KEY UPDATE one under any lock but KEY SHARE, which is
        what a foreign key check takes on the referenced row when the referencing table is written."""
        count = "(SELECT count(*) FROM (SELECT 1 FROM {rel} u WHERE u.tenant_id = t.tenant_id {mode} SKIP LOCKED) l)"
        parts = [
            sql.SQL(
                "SELECT {table}, tenant_id, count(*) - "
                + count.replace("{mode}", "FOR UPDATE")
                + ", count(*) - "
                + count.replace("{mode}", "FOR NO KEY UPDATE")
                + " FROM {rel} t GROUP BY 2"
            ).format(table=sql.Literal(table), rel=sql.Identifier(table))
            for table in self.columns
        ]
        problems = []
        with self.probe.transaction():
            for table, tenant, locked, strong in self.probe.execute(sql.SQL(" UNION ALL ").join(parts)):
                referenced = table == "customers" and "orders" in written
                if locked and tenant != TENANT:
                    problems.append(f"locks {locked} {table} row(s) of tenant {tenant}")
                elif (strong or (locked and not referenced)) and not self.allowed.may_lock(table):
                    problems.append(f"locks {locked} {table} row(s) without an update rule")
                elif read and locked > self.max_rows_written + 1:
                    # a locking read is a write intent: the guard rolls back one that returns more than
                    # maxRowsWritten rows, so the statement itself may lock at most one more than that
                    problems.append(
                        f"locks {locked} {table} rows, more than maxRowsWritten {self.max_rows_written} + 1"
                    )
        return problems

    def _session(self, conn: psycopg.Connection) -> dict[str, Any]:
        """Every setting, the roles, large objects and the locks this backend holds besides its relation locks.

        Settings are compared by digest; they are read one by one only when it changed, to say which."""
        digest, users, objects, locks = conn.execute(
            "SELECT (SELECT md5(string_agg(name || '=' || setting, ',' ORDER BY name)) FROM pg_settings), "
            "current_user || ' / ' || session_user, (SELECT count(*) FROM pg_largeobject_metadata), "
            "(SELECT string_agg(locktype || ' ' || mode || ' ' || coalesce(objid::text, ''), ', ' ORDER BY 1) "
            " FROM pg_locks WHERE pid = pg_backend_pid() "
            " AND locktype NOT IN ('relation', 'virtualxid', 'transactionid'))"
        ).fetchone()
        session = {"users": users, "large objects": objects, "locks": locks}
        if digest != self._settings[0]:
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall())
            if self._settings[0] is None:
                self._settings = (digest, settings)
            session.update(settings)
        else:
            session.update(self._settings[1])
        return session

    def _reset(self) -> None:
        """PREPARE TRANSACTION keeps session-level settings as a commit would: put the session back."""
        self.conn.execute(
            sql.SQL(
                "RESET ALL; RESET ROLE; SET statement_timeout = {}; "
                "SET search_path = pg_catalog, public; SELECT pg_advisory_unlock_all()"
            ).format(sql.Literal(self.timeout_ms))
        )

    def _notify(self, conn: psycopg.Connection) -> list[str]:
        """PREPARE TRANSACTION refuses a transaction with a pending NOTIFY (which rollback would hide)."""
        name = next(self._names)
        try:
            conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(name)))
        except psycopg.errors.FeatureNotSupported as error:
            return [f"sends a notification ({error.diag.message_primary})"]
        except psycopg.Error as error:
            return [f"the transaction cannot be prepared: {error.diag.message_primary}"]
        conn.execute(sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(name)))
        return []


def _compare(
    hidden: Run, real: Run, readable: dict[str, frozenset[str]], filtered: set[tuple[str, str, int]]
) -> list[str]:
    if hidden.error != real.error:
        return [f"the outcome depends on hidden data: {real.error or 'ok'} with it, {hidden.error or 'ok'} without"]
    problems = []
    if hidden.rows != real.rows:
        extra = [r for r in real.rows if r not in hidden.rows][:2]
        problems.append(
            f"the result depends on hidden data ({len(real.rows)} rows with it, "
            f"{len(hidden.rows)} without; e.g. {extra})"
        )
    elif hidden.rowcount != real.rowcount:
        problems.append(f"the row count depends on hidden data ({real.rowcount} vs {hidden.rowcount})")
    visible_real = {k: v for k, v in _visible(real.state, readable).items() if k not in filtered}
    visible_hidden = _visible(hidden.state, readable)
    if visible_real != visible_hidden:
        keys = [k for k in set(visible_real) | set(visible_hidden) if visible_real.get(k) != visible_hidden.get(k)]
        problems.append(f"what it writes depends on hidden data (rows {sorted(keys, key=str)[:3]})")
    return problems


def _visible(state: dict[tuple[str, str, int], dict[str, Any]], readable: dict[str, frozenset[str]]) -> dict:
    return {
        key: {c: v for c, v in row.items() if c in readable[key[0]]}
        for key, row in state.items()
        if "id" in readable[key[0]]
    }


def _changes(before: dict[str, Any], after: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [
        (name, before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if before.get(name) != after.get(name)
    ]


def _scramble(column: str, kind: str) -> sql.Composable:
    ident = sql.Identifier(column)
    return {
        "int": sql.SQL("{} + 100000").format(ident),
        "num": sql.SQL("{} + 1000").format(ident),
        "bool": sql.SQL("NOT {}").format(ident),
        "ts": sql.SQL("{} - interval '1000 days'").format(ident),
        "uuid": sql.SQL("md5({}::text)::uuid").format(ident),
    }.get(kind, sql.SQL("'scrambled:' || md5({}::text)").format(ident))


def _schema_types() -> dict[str, dict[str, str]]:
    from .grammar import TABLES

    return TABLES


def policies() -> dict[str, AgentPolicySpec]:
    """The policies the fuzzer runs under: the support policy; a writer that also inserts, deletes and upserts
    orders and updates customers' emails (so that INSERT, ON CONFLICT and DELETE can be admitted); and the
    support policy with a rowFilter on reading and updating orders (canceled orders are out of reach)."""
    support = load_policy(HERE / "support-policy.yaml").spec
    data = support.model_dump(mode="json")
    data["rules"] = [rule for rule in data["rules"] if rule["id"] != "no-delete"] + [
        {
            "id": "add-orders",
            "effect": "allow",
            "actions": ["insert"],
            "tables": ["orders"],
            "columns": ["id", "customer_id", "status", "total"],
        },
        {"id": "drop-orders", "effect": "allow", "actions": ["delete"], "tables": ["orders"], "requireWhere": True},
        {
            "id": "fix-email",
            "effect": "allow",
            "actions": ["update"],
            "tables": ["customers"],
            "columns": ["email"],
            "requireWhere": True,
        },
        {
            "id": "no-secrets",
            "effect": "deny",
            "actions": ["select", "update", "delete", "insert"],
            "tables": ["secrets"],
        },
    ]
    filtered = support.model_dump(mode="json")
    for rule in filtered["rules"]:
        if rule["id"] in ("read-orders", "fix-status"):
            rule["rowFilter"] = "status <> 'canceled'"
    return {
        "support": support,
        "writer": AgentPolicySpec.model_validate(data),
        "filtered": AgentPolicySpec.model_validate(filtered),
    }


def _schema_columns() -> dict[str, list[str]]:
    return {table: list(columns) for table, columns in _schema_types().items()}
