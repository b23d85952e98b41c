"""Shared databases: a tenant's session idle in a transaction for too long is ended.

Tenant roles get an idle-in-transaction timeout as a default, but a session can SET it off and then hold a
table lock (its table-level DELETE allows LOCK TABLE) that stalls every other tenant in the database. The
operator sweeps for such sessions; the server's own setting is the first line.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import kopf
import psycopg

from ..database import DatabaseUnavailable
from ..errors import first_line

IDLE_LIMIT_ENV = "PAYBILL_IDLE_TRANSACTION_SECONDS"
DEFAULT_IDLE_LIMIT_S = 60.0
logger = logging.getLogger(__name__)


class IdleTransactionSweep(threading.Thread):
    """Every half limit, ends Paybill's tenant and agent sessions idle in a transaction past the limit."""

    def __init__(self, memo: kopf.Memo, limit_s: float, stop: threading.Event) -> None:
        super().__init__(name="paybill-idle-sweep", daemon=True)
        self.memo, self.limit_s, self.stop = memo, limit_s, stop

    def run(self) -> None:
        while not self.stop.wait(max(self.limit_s / 2, 0.5)):
            databases = self.memo.databases
            if databases is None:
                continue
            try:
                ended = databases.end_idle_transactions(self.limit_s)
            except (DatabaseUnavailable, psycopg.Error) as error:
                logger.warning("idle-transaction sweep skipped: %s", first_line(error))
                continue
            if ended:
                logger.warning(
                    "ended %d tenant session(s) idle in a transaction for more than %g s", ended, self.limit_s
                )


@kopf.on.startup()
def start_idle_sweep(memo: kopf.Memo, **_: Any) -> None:
    memo.idle_sweep_stop = threading.Event()
    limit = float(os.environ.get(IDLE_LIMIT_ENV) or DEFAULT_IDLE_LIMIT_S)
    IdleTransactionSweep(memo, limit, memo.idle_sweep_stop).start()


@kopf.on.cleanup()
def stop_idle_sweep(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "idle_sweep_stop", None) is not None:
        memo.idle_sweep_stop.set()
