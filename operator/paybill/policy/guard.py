"""The execution guard: runs an admitted statement as the agent's own role, within the policy's limits.

One connection per agent run, logged in as the agent role (never a superuser that SETs ROLE), with
search_path set for the session when it connects. Every statement is its own transaction, pipelined, that
first sets statement_timeout transaction-locally (as SET LOCAL does): whatever an earlier statement did to
the session's settings, the server stops this one at the deadline (the role carries the same timeout as a
default). The client cancels it too, shortly after the deadline, so the timeout holds even if the server's
was lifted. A read is one round trip; a write (or a row lock) runs in an explicit transaction and is
rolled back when it writes more rows than allowed. A planner-cost precheck
(cached per rewritten statement) refuses expensive statements; reads stop at maxRowsRead.

A database error reaches the agent as its SQLSTATE and condition name only: the message can carry data
(a failed cast quotes the value) and goes to `Outcome.error`, for the audit log alone.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql
from psycopg.pq import TransactionStatus

from .decision import Decision, Reason
from .engine import PolicyEngine

CLIENT_GRACE_S = 1.0  # the server's timeout fires first; the client's cancel is the backstop
CANCEL_TIMEOUT_S = 5.0
# Transaction-local, like SET LOCAL, and a bind parameter: set first in the statement's own transaction.
SET_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"


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

    @contextlib.contextmanager
    def armed(self, seconds: float) -> Iterator[ClientDeadline]:
        with self._changed:
            self.fired = False
            self._deadline = time.monotonic() + seconds
            if self._waking_at is None or self._deadline < self._waking_at:
                self._changed.notify()
        try:
            yield self
        finally:
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
        return {"decision": self.decision.to_json(), "executed": self.executed, "rowsAffected": self.rows_affected,
                "rowsReturned": len(self.rows), "cost": self.cost, "reasons": [r.to_json() for r in self.reasons]}


class ExecutionGuard:
    """Runs one agent's statements for one tenant; `statements` counts toward maxStatementsPerRun."""

    def __init__(self, engine: PolicyEngine, conninfo: str, principal: str, tenant: str | None = None,
                 approvals: frozenset[str] = frozenset(), client_grace_s: float = CLIENT_GRACE_S) -> None:
        self.engine = engine
        self.client_grace_s = client_grace_s  # how long after the server's deadline the client cancels
        self.principal = principal
        self.tenant = tenant
        self.approvals = approvals
        self.statements = 0
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._deadline: ClientDeadline | None = None
        self._costs: dict[str, float] = {}
        self._columns: dict[str, tuple[str, ...]] = {}

    def __enter__(self) -> ExecutionGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
            self._deadline = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                   cursor_factory=psycopg.RawCursor)  # agents write $1, $2
            conn.execute(sql.SQL("SET search_path = pg_catalog, {}").format(sql.Identifier(self.engine.schema.name)))
            self._conn = conn
        return self._conn

    def execute(self, statement: str, params: list[Any] | None = None) -> Outcome:
        params = params or []
        decision = self.engine.decide(self.principal, statement, params, self.tenant, self.approvals)
        limits = self.engine.rules.limits
        self.statements += 1
        if self.statements > limits.maxStatementsPerRun:
            return Outcome(decision, reasons=(Reason("statements_exceeded", f"run already issued "
                                                     f"{limits.maxStatementsPerRun} statements"),))
        if not decision.allowed or decision.sql is None:
            return Outcome(decision, reasons=(Reason("denied", "the policy engine denied the statement"),))
        try:
            conn = self._connection()
            cost = self._cost(conn, decision.sql, params)
            if cost > limits.maxCost:
                return Outcome(decision, cost=cost, reasons=(Reason(
                    "cost_exceeded", f"planner cost {cost:.0f} is above maxCost {limits.maxCost:.0f}"),))
            return self._run(conn, decision, decision.sql, params, cost)
        except _Rollback as rollback:
            return Outcome(decision, reasons=(rollback.reason,))
        except _TimedOut as timed_out:
            return Outcome(decision, reasons=(Reason("timeout", f"statement ran longer than "
                                                                f"{limits.statementTimeoutMs} ms; stopped by the "
                                                                f"{timed_out.by}"),))
        except errors.InsufficientPrivilege as error:
            return Outcome(decision, reasons=(database_reason("database_denied", error),), error=str(error))
        except psycopg.Error as error:
            return Outcome(decision, reasons=(database_reason("database_error", error),), error=str(error))

    @contextlib.contextmanager
    def _guarded(self, conn: psycopg.Connection, writes: bool) -> Iterator[psycopg.Pipeline]:
        """One statement under the policy's timeout: on the server (statement_timeout set transaction-locally
        first, in the statement's own transaction) and on the client (cancelled shortly after the deadline).
        A read is one implicit transaction in one round trip; a write is an explicit one, to be checked before
        it commits."""
        timeout_ms = self.engine.rules.limits.statementTimeoutMs
        if self._deadline is None:
            self._deadline = ClientDeadline(conn)
        try:
            deadline_s = timeout_ms / 1000 + self.client_grace_s
            with self._deadline.armed(deadline_s) as deadline, conn.pipeline() as pipeline, \
                    conn.transaction() if writes else contextlib.nullcontext():
                conn.execute(SET_TIMEOUT, [str(timeout_ms)])
                yield pipeline
        except psycopg.Error as error:
            if conn.info.transaction_status != TransactionStatus.IDLE:
                self.close()  # left inside a transaction: the next statement starts on a new connection
            if isinstance(error, errors.QueryCanceled):
                raise _TimedOut("client" if deadline.fired else "server") from None
            raise

    def _cost(self, conn: psycopg.Connection, rewritten: str, params: list[Any]) -> float:
        cost = self._costs.get(rewritten)  # the statement's shape: estimated once, with its first parameters
        if cost is None:
            with self._guarded(conn, writes=False):
                cur = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(rewritten), params)
            (plan,) = cur.fetchone() or (None,)
            plan = json.loads(plan) if isinstance(plan, str) else plan
            cost = float(plan[0]["Plan"]["Total Cost"])
            self._costs[rewritten] = cost
        return cost

    def _run(self, conn: psycopg.Connection, decision: Decision, rewritten: str, params: list[Any],
             cost: float) -> Outcome:
        limits = self.engine.rules.limits
        locks = decision.extra.get("locks", False)  # a locking read's rows count as written
        writes = decision.statement != "select" or locks
        with self._guarded(conn, writes) as pipeline:
            cur = conn.execute(rewritten, params)
            if writes:
                pipeline.sync()
            if writes and cur.rowcount > limits.maxRowsWritten:
                raise _Rollback(Reason("rows_written_exceeded", f"statement {'locked' if locks else 'changed'} "
                                       f"{cur.rowcount} rows, more than maxRowsWritten {limits.maxRowsWritten}; "
                                       "rolled back"))
        result = cur.pgresult
        if result is not None and result.nfields:  # cheaper than cur.description, which builds Column objects
            columns = self._columns.get(rewritten)
            if columns is None:
                columns = self._columns[rewritten] = tuple(
                    (result.fname(i) or b"").decode() for i in range(result.nfields))
            rows = cur.fetchmany(limits.maxRowsRead)
        else:
            columns, rows = (), []
        affected = cur.rowcount if decision.statement != "select" else 0
        return Outcome(decision, True, columns, rows, affected, cost)

