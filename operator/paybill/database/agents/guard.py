"""The execution guard: runs an admitted statement as the agent's own role, within the policy's limits.

One connection per agent run, logged in as the agent role (never a superuser that SETs ROLE), with
search_path set for the session when it connects. Every statement is its own transaction, pipelined, that
first sets statement_timeout transaction-locally (as SET LOCAL does): whatever an earlier statement did to
the session's settings, the server stops this one at the deadline (the role carries the same timeout as a
default). The same command forces a plan made for each run's parameters, as the cost precheck's EXPLAIN made
it. The client cancels it too, shortly after the deadline, so the timeout holds even if the server's was
lifted. A read is one round trip; a write (or a row lock) runs in an explicit transaction and is
rolled back when it writes more rows than allowed. The guard speaks to libpq directly (`Session`): the
timeout and the statement go out as one pipeline, both prepared once per connection, and psycopg's loaders
build the rows, which costs less than psycopg's own pipeline around every statement. A planner-cost precheck
(cached per rewritten statement and parameters) refuses expensive statements; reads stop at maxRowsRead. The
agent's statement is read row by row as it arrives, and once its values pass maxBytesRead the connection is
dropped: the server stops the statement and rolls back its transaction, and none of its rows are kept. (libpq
still takes in one row whole: the memory a statement can cost the operator is maxBytesRead plus its largest row,
which PostgreSQL limits.)

A database error reaches the agent as its SQLSTATE and condition name only: the message can carry data
(a failed cast quotes the value) and goes to `Outcome.error`, for the audit log alone.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import json
import math
import re
import select
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.adapt import PyFormat, Transformer
from psycopg.pq import ExecStatus, PipelineStatus, TransactionStatus
from psycopg.pq.abc import PGresult

from ...policy.analysis import PLAN_BYTES_PER_CHAR, printed_size
from ...policy.decision import Decision, Reason
from ...policy.engine import Gate
from .steps import PRIMARY_KEY, RECORD, RECORDED, StepKey, StepRecord

# Whether the agent's role may write nothing in its schema (run as the agent; $1: the schema).
HOLDS_NO_WRITE = (
    "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.relnamespace = (SELECT n.oid FROM "
    "pg_catalog.pg_namespace n WHERE n.nspname = $1) AND c.relkind IN ('r', 'p') AND "
    "(pg_catalog.has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE') "
    "OR pg_catalog.has_any_column_privilege(c.oid, 'INSERT, UPDATE')))"
)
WRITES_HELD = (
    "the tenant's data takes no writes now (it is moving to another placement, or read-only): nothing was written"
)
CLIENT_GRACE_S = 1.0  # the server's timeout fires first; the client's cancel is the backstop
CANCEL_TIMEOUT_S = 5.0


def plan_cost(node: dict[str, Any]) -> float:
    """The costliest node of an EXPLAIN (FORMAT JSON) plan: a Limit's own cost is scaled down to the rows it expects
    to need, but what runs under it (a join whose filter keeps nothing) may go to its end all the same."""
    costs = [float(node["Total Cost"]), *(plan_cost(child) for child in node.get("Plans") or ())]
    # an estimate past what a double holds reads Infinity, and Infinity - Infinity NaN: never cheaper than any
    return math.inf if any(math.isnan(cost) for cost in costs) else max(costs)


def error_text(error: psycopg.Error) -> str:
    """The database's message for the audit log, at most ERROR_TEXT_KEPT characters: a failed cast quotes the whole
    value, which a statement can grow to a gigabyte within maxCost and past maxBytesRead."""
    text = str(error)
    if len(text) <= ERROR_TEXT_KEPT:
        return text
    return f"{text[:ERROR_TEXT_KEPT]}... ({len(text) - ERROR_TEXT_KEPT} more characters not kept)"


def condition_name(sqlstate: str) -> str:
    """PostgreSQL's condition name for a SQLSTATE (invalid_text_representation for 22P02), else "unknown"."""
    try:
        error_class = errors.lookup(sqlstate)
    except KeyError:
        return "unknown"
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", error_class.__name__).lower().rstrip("_")


def database_reason(code: str, error: psycopg.Error) -> Reason:
    """What the agent may learn of a database error: its SQLSTATE and condition name, never its text."""
    if error.sqlstate is None:
        return Reason(code, "the database connection failed (no SQLSTATE)")
    return Reason(code, f"SQLSTATE {error.sqlstate} {condition_name(error.sqlstate)}")


class ClientDeadline:
    """Cancels the statement running on `conn` when its deadline passes: one watchdog thread per connection,
    armed around each statement (no thread per statement)."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.fired = False
        self._conn = conn
        self._changed = threading.Condition()
        self._deadline: float | None = None
        self._waking_at: float | None = None  # when the watchdog wakes next (None: only when told)
        self._closed = False
        threading.Thread(target=self._watch, name="paybill-deadline", daemon=True).start()

    def armed(self, seconds: float) -> ClientDeadline:
        """Arms the deadline `seconds` from now, until the `with` block this is used in ends."""
        with self._changed:
            self.fired = False
            self._deadline = time.monotonic() + seconds
            if self._waking_at is None or self._deadline < self._waking_at:
                self._changed.notify()
        return self

    def __enter__(self) -> ClientDeadline:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._changed:  # waits for a cancel in flight: it lands before the next statement starts
            self._deadline = None

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify()

    def _watch(self) -> None:
        with self._changed:
            while not self._closed:
                now = time.monotonic()
                if self._deadline is not None and self._deadline <= now:
                    self._deadline, self.fired = None, True
                    with contextlib.suppress(psycopg.Error):  # the connection closed meanwhile: nothing to stop
                        self._conn.cancel_safe(timeout=CANCEL_TIMEOUT_S)
                    continue
                self._waking_at = self._deadline
                self._changed.wait(None if self._deadline is None else self._deadline - now)


Command = tuple[str, Sequence[Any]]  # SQL with $n placeholders, and its parameters
BEGIN: Command = ("BEGIN", ())
COMMIT: Command = ("COMMIT", ())
ROLLBACK: Command = ("ROLLBACK", ())
Key = tuple[str, tuple[int, ...]]
PREPARED_MAX = 100  # statements prepared per connection; any further one is parsed on every run
# How long an estimate of (statement, parameters) is reused. Every run is planned afresh (plan_cache_mode), against
# the table as it is then: other tenants' rows and ANALYZE change a plan, so an estimate is not kept for the run;
# within this, a statement repeated in a loop is costed once. A write of the run drops every estimate.
COST_REUSE_S = 1.0
ERROR_TEXT_KEPT = 8192  # characters of a database error's message kept for the audit log
# Rows libpq hands over at a time while the agent's statement is read: one, so that maxBytesRead is held after each
# row (a chunk of 64 rows of doubled values had brought 15 times the limit in before it was checked).
CHUNK_ROWS = 1
# What maxBytesRead counts besides a value's length: what Python holds for it once loaded (a Decimal is about 104
# bytes and its slot in the row 8; a NULL's length is 0), and for each row its tuple. Lengths alone let 1,500 numeric
# columns count 7.5 MB while the rows kept took 168 MB.
VALUE_COST = 128
ROW_COST = 64
# The planner writes a parameter's value into the plan at each of its uses, so EXPLAIN's output grows with uses x size:
# a value is taken at its printed size (analysis.printed_size: a number at its digits written out, 1e131071 prints
# 131,072 of them) times PLAN_BYTES_PER_CHAR, for quoting and escaping.
PLAN_ALLOWANCE = 4 * 1024 * 1024  # a plan's own text, without parameters: statements are at most 64 kB
PARAMETER = re.compile(r"\$(\d+)")


def parameter_expansion(sql: str, params: Sequence[Any]) -> int:
    """About the most bytes `params` add to `sql`'s plan: each value's text at each `$n` of the statement (a `$n` in a
    string literal counts too: never fewer)."""
    uses = collections.Counter(int(number) for number in PARAMETER.findall(sql))
    sizes = [_printed_size(value) for value in params]
    return sum(uses[n] * (PLAN_BYTES_PER_CHAR * size + 32) for n, size in enumerate(sizes, start=1))


def _printed_size(value: Any) -> int:
    """About the bytes `value` takes in a plan: an array's elements each, a number (or text PostgreSQL may read as one)
    written out."""
    if isinstance(value, list):
        return sum(_printed_size(item) + 2 for item in value)
    return printed_size(value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False))


@dataclass
class Reading:
    """How an exchange reads its last command's rows: row by row as they arrive, keeping the first `keep`, and
    refused with `ResultTooLarge` once they pass `max_bytes` (each value's length plus VALUE_COST, ROW_COST a row)."""

    keep: int
    max_bytes: int
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    received: int = 0
    tagged: int | None = None  # the rows its command tag counts (SELECT 3, UPDATE 3): libpq puts it on the last chunk


def tag_rows(result: PGresult, reading: Reading | None) -> int | None:
    """The rows a command's tag counts, wherever libpq put it (`Reading.tagged`)."""
    if result.command_tuples is not None or reading is None:
        return result.command_tuples
    return reading.tagged


class ResultTooLarge(Exception):
    """An exchange stopped reading past its Reading's `max_bytes`; its connection is closed."""


class ResultUnreadable(Exception):
    """A value of a Reading's rows could not be loaded (a jsonb number of more than 4,300 digits is past Python's
    int conversion); its connection is closed. Its message names the error's class only, never the value."""


@functools.cache
def set_timeout(timeout_ms: int) -> Command:
    """statement_timeout for the current transaction only (as SET LOCAL), with no parameter to bind; and a plan
    made for each run's own parameters, as the cost check's EXPLAIN made it (a prepared statement otherwise turns to
    one generic plan after five runs, which the check never costed)."""
    return (
        f"SELECT set_config('statement_timeout', '{int(timeout_ms)}', true),"
        " set_config('plan_cache_mode', 'force_custom_plan', true)",
        (),
    )


class Session:
    """One agent connection driven at the protocol level: each exchange sends its commands as one libpq pipeline
    ending in a Sync and reads every result back, so the connection is idle and out of pipeline mode between
    exchanges. Statements are prepared once per connection (up to PREPARED_MAX); rows are loaded by psycopg's
    own loaders. Anything that leaves the pipeline half read closes the connection."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.conn = conn
        self.deadline = ClientDeadline(conn)
        self._pgconn = conn.pgconn
        self._transformer = Transformer(conn)
        self._encoding = conn.info.encoding
        self._prepared: dict[Key, bytes] = {}  # (SQL, parameter types) -> prepared statement name
        self._names = 0
        self._readable = select.poll()
        self._readable.register(self._pgconn.socket, select.POLLIN)
        self._writable = select.poll()
        self._writable.register(self._pgconn.socket, select.POLLIN | select.POLLOUT)

    @property
    def closed(self) -> bool:
        return self.conn.closed

    @property
    def idle(self) -> bool:
        return self._pgconn.transaction_status == TransactionStatus.IDLE  # a closed connection is UNKNOWN

    def close(self) -> None:
        self.deadline.close()
        self.conn.close()

    def exchange(
        self, commands: Sequence[Command], prepare: bool = True, reading: Reading | None = None
    ) -> list[PGresult]:
        """Runs the commands in one round trip; returns their results, or raises the first one's error once
        the whole pipeline has been read (the commands after it are skipped by the server). With `reading`, the
        last command's rows go to `reading.rows` and its result holds none (its columns and command tag only)."""
        try:
            self._pgconn.enter_pipeline_mode()
            parses = [self._send(sql, params, prepare) for sql, params in commands]
            self._pgconn.pipeline_sync()
            # each result is followed by one None: the last command's own comes after this many
            nones_before = len(commands) - 1 + sum(parse is not None for parse in parses)
            results = self._read_to_sync(reading, nones_before)
            self._pgconn.exit_pipeline_mode()
            if len(results) != 2 * len(commands) - parses.count(None):
                raise psycopg.OperationalError(f"{len(results)} results for {len(commands)} commands")
        except BaseException:
            self.close()  # results left unread: the connection cannot be trusted with another statement
            raise
        for result in results:
            if result.status not in (ExecStatus.TUPLES_OK, ExecStatus.COMMAND_OK):
                self._record_prepared(parses, results)
                raise errors.error_from_result(result, encoding=self._encoding)  # or a COPY: never ours
        return self._record_prepared(parses, results) if len(results) > len(commands) else results

    def _record_prepared(self, parses: list[tuple[Key, bytes] | None], results: list[PGresult]) -> list[PGresult]:
        """Remembers the statements this exchange prepared; returns the results of the commands alone."""
        executed, position = [], 0
        for parse in parses:
            if parse is not None:
                if results[position].status == ExecStatus.COMMAND_OK:
                    self._prepared[parse[0]] = parse[1]
                position += 1
            executed.append(results[position])
            position += 1
        return executed

    def load_rows(self, result: PGresult, limit: int) -> list[tuple[Any, ...]]:
        self._transformer.set_pgresult(result)
        return self._transformer.load_rows(0, min(result.ntuples, limit), tuple)

    def _send(self, sql: str, params: Sequence[Any], prepare: bool) -> tuple[Key, bytes] | None:
        """Sends one command; returns its key and name when a Parse preparing it went first."""
        values = self._transformer.dump_sequence(params, [PyFormat.AUTO] * len(params)) if params else None
        types = (self._transformer.types or ()) if params else ()
        formats = self._transformer.formats if params else None
        key = (sql, types)
        name = self._prepared.get(key)
        parsing = None
        if prepare and name is None and len(self._prepared) < PREPARED_MAX:
            self._names += 1
            name = b"paybill_%d" % self._names
            self._pgconn.send_prepare(name, sql.encode(self._encoding), types or None)
            parsing = (key, name)
        if name is None:
            self._pgconn.send_query_params(sql.encode(self._encoding), values, types or None, formats)
        else:
            self._pgconn.send_query_prepared(name, values, formats)
        return parsing

    def _read_to_sync(self, reading: Reading | None, nones_before: int) -> list[PGresult]:
        pgconn = self._pgconn
        while pgconn.flush():  # a non-blocking connection: wait until the server can take the rest
            if any(event & select.POLLIN for _, event in self._writable.poll()):
                pgconn.consume_input()
        results: list[PGresult] = []
        between = False  # libpq ends each command's results with one None; two in a row: nothing is coming
        nones, chunked = 0, reading is None
        while True:
            if not chunked and nones == nones_before:  # before libpq parses any of the last command's reply
                if pgconn.pipeline_status != PipelineStatus.ABORTED:  # else it is skipped: an earlier error is the one
                    pgconn.set_chunked_rows_mode(CHUNK_ROWS)
                chunked = True
            while pgconn.is_busy():
                self._readable.poll()
                pgconn.consume_input()
            result = pgconn.get_result()
            if result is None:
                if between:
                    raise psycopg.OperationalError("the connection ended before the pipeline's Sync")
                between = True
                nones += 1
            elif result.status == ExecStatus.PIPELINE_SYNC:
                return results
            elif result.status == ExecStatus.TUPLES_CHUNK and reading is not None:
                between = False
                self._take(result, reading)
            else:
                between = False
                results.append(result)

    def _take(self, chunk: PGresult, reading: Reading) -> None:
        width, value = chunk.nfields, chunk.get_value  # copies one value at a time (PQgetlength is not bound)
        for row in range(chunk.ntuples):
            reading.received += ROW_COST + width * VALUE_COST
            reading.received += sum(len(value(row, column) or b"") for column in range(width))
        if reading.received > reading.max_bytes:
            raise ResultTooLarge(f"more than {reading.max_bytes} bytes")
        if chunk.command_tuples is not None:
            reading.tagged = chunk.command_tuples
        room = reading.keep - len(reading.rows)
        if room > 0:
            self._transformer.set_pgresult(chunk)
            try:
                reading.rows += self._transformer.load_rows(0, min(chunk.ntuples, room), tuple)
            except Exception as error:  # a loader's own error: ValueError, RecursionError, ...
                raise ResultUnreadable(type(error).__name__) from None


class _Rollback(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.message)
        self.reason = reason


class _TimedOut(Exception):
    def __init__(self, by: str) -> None:
        super().__init__(f"stopped by the {by}")
        self.by = by


@dataclass(frozen=True)
class Outcome:
    """What happened to one statement: the decision, and if it ran, its rows and effects."""

    decision: Decision
    executed: bool = False
    columns: tuple[str, ...] = ()
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rows_affected: int = 0
    cost: float | None = None
    reasons: tuple[Reason, ...] = ()
    error: str | None = None  # the database's full message: the audit log only, never status, Events or logs

    @property
    def ok(self) -> bool:
        return self.executed and not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision.to_json(),
            "executed": self.executed,
            "rowsAffected": self.rows_affected,
            "rowsReturned": len(self.rows),
            "cost": self.cost,
            "reasons": [r.to_json() for r in self.reasons],
        }


class ExecutionGuard:
    """Runs one agent's statements for one tenant; `statements` counts toward maxStatementsPerRun."""

    def __init__(
        self,
        engine: Gate,
        conninfo: str,
        principal: str,
        tenant: str | None = None,
        approvals: frozenset[str] = frozenset(),
        client_grace_s: float = CLIENT_GRACE_S,
    ) -> None:
        self.engine = engine
        self.client_grace_s = client_grace_s  # how long after the server's deadline the client cancels
        self.principal = principal
        self.tenant = tenant
        self.approvals = approvals
        self.statements = 0
        self._conninfo = conninfo
        self._session: Session | None = None
        # (rewritten statement, its parameters as JSON) -> (cost, when it was estimated): see COST_REUSE_S
        self._costs: dict[tuple[str, str], tuple[float, float]] = {}
        self._columns: dict[str, tuple[str, ...]] = {}

    def __enter__(self) -> ExecutionGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _connect(self) -> Session:
        if self._session is None or self._session.closed:
            self.close()
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5)
            try:
                conn.execute(
                    sql.SQL("SET search_path = pg_catalog, {}").format(sql.Identifier(self.engine.schema.name))
                )
            except BaseException:
                conn.close()
                raise
            self._session = Session(conn)
        return self._session

    def recorded(self, workflow: str) -> dict[int, StepRecord]:
        """The steps of `workflow` this agent's role recorded as done (committed with their statements)."""
        session = self._connect()
        result = session.exchange(((RECORDED, [workflow]),), prepare=False)[0]
        rows = session.load_rows(result, result.ntuples)
        return {step: StepRecord(step, name, rows_, plan_hash) for step, name, rows_, plan_hash in rows}

    def execute(self, statement: str, params: list[Any] | None = None, step: StepKey | None = None) -> Outcome:
        """Run one statement if the engine admits it. With `step`, its completion record is inserted and committed
        in the statement's own transaction (a step already recorded is refused and rolled back)."""
        params = params or []
        decision = self.engine.decide(self.principal, statement, params, self.tenant, self.approvals)
        limits = self.engine.rules.limits
        self.statements += 1
        if self.statements > limits.maxStatementsPerRun:
            return Outcome(
                decision,
                reasons=(Reason("statements_exceeded", f"run already issued {limits.maxStatementsPerRun} statements"),),
            )
        if not decision.allowed or decision.sql is None:
            return Outcome(decision, reasons=(Reason("denied", "the policy engine denied the statement"),))
        key = (decision.sql, json.dumps(params, default=str, sort_keys=True))
        # once the plan of these parameters was read, its size is known to fit: only a new estimate needs the check
        if self._reused_cost(key) is None and parameter_expansion(decision.sql, params) > limits.maxBytesRead:
            return Outcome(
                decision,
                reasons=(
                    Reason(
                        "plan_too_large",
                        "its parameters, at each of their uses, would make its plan larger than maxBytesRead "
                        f"{limits.maxBytesRead} bytes",
                    ),
                ),
            )
        try:
            session = self._connect()
            started = time.monotonic()
            cost = self._cost(session, key, params)
            if not cost <= limits.maxCost:  # fails closed: NaN is not within any limit
                return Outcome(
                    decision,
                    cost=cost,
                    # never the estimate: it comes from statistics over every tenant's rows of a shared table
                    reasons=(
                        Reason(
                            "cost_exceeded", f"the statement's estimated cost is above maxCost {limits.maxCost:.0f}"
                        ),
                    ),
                )
            # the cost check's EXPLAIN plans the statement as the run will (constants folded): one budget for both
            left_ms = limits.statementTimeoutMs - round((time.monotonic() - started) * 1000)
            if left_ms < 1:
                raise _TimedOut("guard: its cost check took the whole timeout")
            return self._run(session, decision, decision.sql, params, cost, step, left_ms)
        except _Rollback as rollback:
            return Outcome(decision, reasons=(rollback.reason,))
        except _TimedOut as timed_out:
            return Outcome(
                decision,
                reasons=(
                    Reason(
                        "timeout",
                        f"statement ran longer than {limits.statementTimeoutMs} ms; stopped by the {timed_out.by}",
                    ),
                ),
            )
        except errors.InsufficientPrivilege as error:
            return Outcome(decision, reasons=(self._refusal(decision, error),), error=error_text(error))
        except psycopg.Error as error:
            return Outcome(decision, reasons=(database_reason("database_error", error),), error=error_text(error))

    def _refusal(self, decision: Decision, error: psycopg.Error) -> Reason:
        """Why the database refused: a write the policy allows, refused while the role holds no write privilege
        at all in its schema, is held (its tenant's data is moving, or read-only); anything else, its SQLSTATE."""
        if decision.statement == "select" or self._session is None or self._session.closed:
            return database_reason("database_denied", error)
        try:
            result = self._guarded(self._session, (HOLDS_NO_WRITE, [self.engine.schema.name]), prepare=False)
            ((held,),) = self._session.load_rows(result, 1)
        except (psycopg.Error, _TimedOut):
            return database_reason("database_denied", error)
        if not held:
            return database_reason("database_denied", error)
        return Reason("writes_held", WRITES_HELD)

    def _guarded(
        self,
        session: Session,
        command: Command,
        writes: str | None = None,
        prepare: bool = True,
        step: StepKey | None = None,
        reading: Reading | None = None,
        budget_ms: int | None = None,
    ) -> PGresult:
        """One statement under the policy's timeout, on the server (statement_timeout set transaction-locally
        by the command before it, in its own transaction) and on the client (cancelled shortly after the
        deadline). A read is one implicit transaction in one round trip; a write is an explicit one, checked
        against maxRowsWritten before it commits (a second round trip); `writes` says what it does to its rows
        ("changed", "locked"). With `step`, a read is an explicit transaction too, and the step's record is inserted
        just before COMMIT, in the same round trip. No transaction outlives an error or a refused write. With
        `reading`, the statement's rows go to it (`Session.exchange`); past its bytes, nothing is kept or committed.
        `budget_ms`: what is left of the timeout (the cost check took the rest), else all of it."""
        limits = self.engine.rules.limits
        budget_ms = limits.statementTimeoutMs if budget_ms is None else budget_ms
        timeout = set_timeout(budget_ms)
        try:
            with session.deadline.armed(budget_ms / 1000 + self.client_grace_s) as deadline:
                try:
                    if not writes and step is None:
                        return session.exchange((timeout, command), prepare, reading)[-1]
                    result = session.exchange((BEGIN, timeout, command), prepare, reading)[-1]
                    written = tag_rows(result, reading) or 0
                    if writes and written > limits.maxRowsWritten:
                        raise _Rollback(
                            Reason(
                                "rows_written_exceeded",
                                f"statement {writes} "
                                f"{written} rows, more than maxRowsWritten {limits.maxRowsWritten}; "
                                "rolled back",
                            )
                        )
                    session.exchange((*self._record(step, result, reading), COMMIT))
                    return result
                except errors.QueryCanceled:
                    raise _TimedOut("client" if deadline.fired else "server") from None
                except ResultTooLarge:  # the connection is closed: the server rolls back what the statement did
                    raise _Rollback(
                        Reason(
                            "bytes_read_exceeded",
                            f"the statement returned more than maxBytesRead {limits.maxBytesRead} bytes; none are kept",
                        )
                    ) from None
                except ResultUnreadable as error:  # the same: closed, rolled back
                    raise _Rollback(
                        Reason(
                            "result_unreadable",
                            f"a value the statement returned could not be read ({error}); none are kept, rolled back",
                        )
                    ) from None
                except errors.UniqueViolation as error:
                    if step is None or error.diag.constraint_name != PRIMARY_KEY:
                        raise
                    raise _Rollback(
                        Reason("step_already_done", f"step {step.name} is recorded as done already; rolled back")
                    ) from None
        except BaseException:
            self._end_transaction(session)
            raise

    @staticmethod
    def _record(step: StepKey | None, result: PGresult, reading: Reading | None) -> tuple[Command, ...]:
        """The insert recording `step` as done (none without a step): rows written, else rows returned."""
        if step is None:
            return ()
        tagged = tag_rows(result, reading)
        rows = tagged if tagged is not None else result.ntuples
        return ((RECORD, [step.workflow, step.step, step.name, rows, step.plan_hash]),)

    def _end_transaction(self, session: Session) -> None:
        """After an error or a refused write: roll back what is open, or drop the connection."""
        if session.closed or session.idle:
            return
        try:
            session.exchange((ROLLBACK,))
        except psycopg.Error:
            self.close()
        if not session.idle:
            self.close()

    def _cost(self, session: Session, key: tuple[str, str], params: list[Any]) -> float:
        """The estimate for `key`, (rewritten statement, its parameters as JSON): per parameters too, since PostgreSQL
        plans with them and an estimate can grow with a value (an array's length)."""
        cost = self._reused_cost(key)
        if cost is None:
            rewritten = key[0]
            # the plan is one row, read like any, within maxBytesRead and what a plan of the statement alone can take
            reading = Reading(1, self.engine.rules.limits.maxBytesRead + PLAN_ALLOWANCE)
            self._guarded(session, ("EXPLAIN (FORMAT JSON) " + rewritten, params), prepare=False, reading=reading)
            ((plan,),) = reading.rows
            plan = json.loads(plan) if isinstance(plan, str) else plan
            cost = plan_cost(plan[0]["Plan"])
            self._costs[key] = (cost, time.monotonic())
        return cost

    def _reused_cost(self, key: tuple[str, str]) -> float | None:
        """The estimate made for `key` under COST_REUSE_S ago, if any."""
        cached = self._costs.get(key)
        if cached is None or time.monotonic() - cached[1] >= COST_REUSE_S:
            return None
        return cached[0]

    def _run(
        self,
        session: Session,
        decision: Decision,
        rewritten: str,
        params: list[Any],
        cost: float,
        step: StepKey | None,
        budget_ms: int,
    ) -> Outcome:
        limits = self.engine.rules.limits
        writes = "changed" if decision.statement != "select" else "locked" if decision.extra.get("locks") else None
        recorded = step if step is None else dataclasses.replace(step, plan_hash=decision.plan_hash)
        reading = Reading(limits.maxRowsRead, limits.maxBytesRead)
        if writes:  # what it writes can change every estimate of the run
            self._costs.clear()
        # locked rows count as written
        result = self._guarded(
            session, (rewritten, params), writes, step=recorded, reading=reading, budget_ms=budget_ms
        )
        if result.nfields:
            columns = self._columns.get(rewritten)
            if columns is None:
                columns = self._columns[rewritten] = tuple(
                    (result.fname(i) or b"").decode() for i in range(result.nfields)
                )
            rows = reading.rows
        else:
            columns, rows = (), []
        affected = (tag_rows(result, reading) or 0) if decision.statement != "select" else 0
        return Outcome(decision, True, columns, rows, affected, cost)
