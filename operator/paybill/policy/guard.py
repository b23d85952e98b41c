"""The execution guard: runs an admitted statement as the agent's own role, within the policy's limits.

One connection per agent run, logged in as the agent role (never a superuser that SETs ROLE), with
statement_timeout and search_path set for the session when it connects; the engine never admits SET or
set_config, so the agent cannot change them (the role carries the same timeout as a default). Every
statement is its own transaction: a read is one implicit transaction and one round trip; DML runs in an
explicit one, pipelined, and is rolled back when it writes more rows than allowed. A planner-cost
precheck (cached per rewritten statement) refuses expensive statements; reads stop at maxRowsRead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql

from ..errors import first_line
from .decision import Decision, Reason
from .engine import PolicyEngine


class _Rollback(Exception):
    def __init__(self, reason: Reason) -> None:
        super().__init__(reason.message)
        self.reason = reason


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

    @property
    def ok(self) -> bool:
        return self.executed and not self.reasons

    def to_json(self) -> dict[str, Any]:
        return {"decision": self.decision.to_json(), "executed": self.executed, "rowsAffected": self.rows_affected,
                "rowsReturned": len(self.rows), "cost": self.cost, "reasons": [r.to_json() for r in self.reasons]}


class ExecutionGuard:
    """Runs one agent's statements for one tenant; `statements` counts toward maxStatementsPerRun."""

    def __init__(self, engine: PolicyEngine, conninfo: str, principal: str, tenant: str | None = None,
                 approvals: frozenset[str] = frozenset()) -> None:
        self.engine = engine
        self.principal = principal
        self.tenant = tenant
        self.approvals = approvals
        self.statements = 0
        self._conninfo = conninfo
        self._conn: psycopg.Connection[Any] | None = None
        self._costs: dict[str, float] = {}
        self._columns: dict[str, tuple[str, ...]] = {}

    def __enter__(self) -> ExecutionGuard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5,
                                   cursor_factory=psycopg.RawCursor)  # agents write $1, $2
            conn.execute(sql.SQL("SET statement_timeout = {}").format(
                sql.Literal(self.engine.rules.limits.statementTimeoutMs)))
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
            cost = self._cost(conn, decision, params)
            if cost > limits.maxCost:
                return Outcome(decision, cost=cost, reasons=(Reason(
                    "cost_exceeded", f"planner cost {cost:.0f} is above maxCost {limits.maxCost:.0f}"),))
            return self._run(conn, decision, params, cost)
        except _Rollback as rollback:
            return Outcome(decision, reasons=(rollback.reason,))
        except errors.QueryCanceled:
            return Outcome(decision, reasons=(Reason("timeout", f"statement ran longer than "
                                                                f"{limits.statementTimeoutMs} ms"),))
        except errors.InsufficientPrivilege as error:
            return Outcome(decision, reasons=(Reason("database_denied", first_line(error)),))
        except psycopg.Error as error:
            return Outcome(decision, reasons=(Reason("database_error", first_line(error)),))

    def _cost(self, conn: psycopg.Connection, decision: Decision, params: list[Any]) -> float:
        key = decision.sql or ""  # the statement's shape: estimated once, with its first parameters
        cost = self._costs.get(key)
        if cost is None:
            cur = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) ") + sql.SQL(decision.sql), params)
            plan = cur.fetchone()[0]
            plan = json.loads(plan) if isinstance(plan, str) else plan
            cost = float(plan[0]["Plan"]["Total Cost"])
            self._costs[key] = cost
        return cost

    def _run(self, conn: psycopg.Connection, decision: Decision, params: list[Any], cost: float) -> Outcome:
        limits = self.engine.rules.limits
        if decision.statement == "select":
            cur = conn.execute(decision.sql, params)
        else:
            with conn.pipeline() as pipeline, conn.transaction():
                cur = conn.execute(decision.sql, params)
                pipeline.sync()
                if cur.rowcount > limits.maxRowsWritten:
                    raise _Rollback(Reason("rows_written_exceeded", f"statement changed {cur.rowcount} rows, more "
                                           f"than maxRowsWritten {limits.maxRowsWritten}; rolled back"))
        result = cur.pgresult
        if result is not None and result.nfields:  # cheaper than cur.description, which builds Column objects
            columns = self._columns.get(decision.sql)
            if columns is None:
                columns = self._columns[decision.sql] = tuple(
                    (result.fname(i) or b"").decode() for i in range(result.nfields))
            rows = cur.fetchmany(limits.maxRowsRead)
        else:
            columns, rows = (), []
        affected = cur.rowcount if decision.statement != "select" else 0
        return Outcome(decision, True, columns, rows, affected, cost)

