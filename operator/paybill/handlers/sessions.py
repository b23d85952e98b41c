"""Shared databases: a tenant's session that stalls the other tenants is ended.

Tenant roles get idle-in-transaction and lock timeouts as defaults, but a session can SET them off, and its
table-level DELETE allows LOCK TABLE in every mode. One loop:
- every half idle limit, ends the sessions idle in a transaction past the limit;
- every second, the lock watchdog (`database.lock_holders` decides) ends a session holding a stalling lock on
  a shared table, or blocking another tenant or the operator past the lock limit: a Warning Event on its Tenant
  and an audit record say which table and for how long (never SQL text, never another tenant's name).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import kopf
import psycopg

from ..api.meta import API_VERSION
from ..database import DatabaseUnavailable
from ..database.lock_holders import Termination
from ..errors import first_line
from ..kubeclient import KubeError
from . import events
from .apply import audit

IDLE_LIMIT_ENV = "PAYBILL_IDLE_TRANSACTION_SECONDS"
DEFAULT_IDLE_LIMIT_S = 60.0
LOCK_LIMIT_ENV = "PAYBILL_LOCK_HOLD_SECONDS"
DEFAULT_LOCK_LIMIT_S = 10.0
LOCK_CHECK_S = 1.0  # the operator's row-security DDL waits 2 s per attempt: look more often than that
SESSION_ENDED = "TenantSessionEnded"
logger = logging.getLogger(__name__)


class SessionSweep(threading.Thread):
    """Ends Paybill's tenant and agent sessions idle in a transaction past `idle_limit_s`, and those the lock
    watchdog names (`lock_limit_s`)."""

    def __init__(self, memo: kopf.Memo, idle_limit_s: float, lock_limit_s: float, stop: threading.Event) -> None:
        super().__init__(name="paybill-session-sweep", daemon=True)
        self.memo, self.idle_limit_s, self.lock_limit_s, self.stop = memo, idle_limit_s, lock_limit_s, stop

    def run(self) -> None:
        next_idle_sweep = time.monotonic() + self.idle_period
        while not self.stop.wait(min(LOCK_CHECK_S, self.idle_period)):
            databases = self.memo.databases
            if databases is None:
                continue
            try:
                if time.monotonic() >= next_idle_sweep:
                    next_idle_sweep = time.monotonic() + self.idle_period
                    self._report_idle(databases.end_idle_transactions(self.idle_limit_s))
                for ended in databases.end_lock_holders(self.lock_limit_s):
                    self._report(ended)
            except (DatabaseUnavailable, psycopg.Error) as error:
                logger.warning("session sweep skipped: %s", first_line(error))

    @property
    def idle_period(self) -> float:
        return max(self.idle_limit_s / 2, 0.5)

    def _report_idle(self, ended: int) -> None:
        if ended:
            logger.warning(
                "ended %d tenant session(s) idle in a transaction for more than %g s", ended, self.idle_limit_s
            )

    def _report(self, ended: Termination) -> None:
        """A Warning Event on the session's Tenant and an audit record (the Tenant may be gone: a log line)."""
        logger.warning("tenant %s: %s", ended.tenant, ended.message())
        try:
            found = self.memo.kube.get(API_VERSION, "tenants", ended.tenant)
        except KubeError as error:
            logger.warning("could not read Tenant %s: %s", ended.tenant, first_line(error))
            found = None
        ref = found or {"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": ended.tenant}}
        if found is not None:
            events.warn(found, reason=SESSION_ENDED, message=ended.message())
        audit(ref, self.memo.get("audit"), "Tenant", ended.tenant, "session-ended", ended.details())  # type: ignore[arg-type]


@kopf.on.startup()
def start_session_sweep(memo: kopf.Memo, **_: Any) -> None:
    memo.idle_sweep_stop = threading.Event()
    idle = float(os.environ.get(IDLE_LIMIT_ENV) or DEFAULT_IDLE_LIMIT_S)
    locks = float(os.environ.get(LOCK_LIMIT_ENV) or DEFAULT_LOCK_LIMIT_S)
    SessionSweep(memo, idle, locks, memo.idle_sweep_stop).start()


@kopf.on.cleanup()
def stop_session_sweep(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "idle_sweep_stop", None) is not None:
        memo.idle_sweep_stop.set()
