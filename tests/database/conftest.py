"""Fixtures for the database package's tests: a TenantDatabases on the session's PostgreSQL, unique names."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres

_names = itertools.count()


@pytest.fixture
def databases(postgres: LocalPostgres, tmp_path: Path) -> Iterator[TenantDatabases]:
    dbs = TenantDatabases(postgres.dsn, backup_dir=tmp_path / "backups")
    yield dbs
    dbs.close()


def fresh(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"
