"""A few autocommit connections to the backend's PostgreSQL, kept between runs (a login costs more than the
statements a run sends: tens of milliseconds with SCRAM on a busy machine)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import psycopg
from psycopg.pq import TransactionStatus

KEPT = 4


class Connections:
    def __init__(self, dsn: str, kept: int = KEPT) -> None:
        self.dsn, self.kept = dsn, kept
        self._idle: list[psycopg.Connection] = []
        self._guard = threading.Lock()

    @contextlib.contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        with self._guard:
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            connection = psycopg.connect(self.dsn, autocommit=True)
        try:
            yield connection
        except BaseException:
            connection.close()
            raise
        self._keep(connection)

    def _keep(self, connection: psycopg.Connection) -> None:
        healthy = not connection.closed and connection.info.transaction_status == TransactionStatus.IDLE
        with self._guard:
            if healthy and len(self._idle) < self.kept:
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        with self._guard:
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
