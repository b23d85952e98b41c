"""Placement and backup records to and from the Tenant's status, through the api models. Pure: no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from paybill.api.plan import Isolation
from paybill.api.tenant import BackupStatus, DatabasePlacement, TableChecksum, TenantStatus
from paybill.database import Backup, Placement, placement_at

ROLE = "t_0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("isolation", "database", "schema"),
    [
        (Isolation.POOLED, "paybill_pooled", "app"),
        (Isolation.BRIDGE, "paybill_bridge", ROLE),
        (Isolation.SILO, ROLE, "app"),
    ],
)
def test_a_placement_is_written_as_the_status_model_and_read_back(
    isolation: Isolation, database: str, schema: str
) -> None:
    placement = placement_at("acme", isolation, ROLE)
    written = {"isolation": str(isolation), "database": database, "schema": schema, "role": ROLE}
    assert placement.to_status() == written
    assert placement.to_model() == DatabasePlacement.model_validate(written)
    assert TenantStatus.model_validate({"database": written}).database == placement.to_model()
    assert Placement.from_status("acme", written) == placement
    assert Placement.from_status("acme", placement.to_model()) == placement


@pytest.mark.parametrize(
    "status",
    [
        {"isolation": "pooled", "database": "paybill_pooled", "schema": "app"},  # no role
        {"isolation": "shared", "database": "paybill_pooled", "schema": "app", "role": ROLE},  # no such model
        {"isolation": "silo", "database": ROLE, "schema": "app", "role": ROLE, "host": "elsewhere"},  # unknown field
    ],
)
def test_a_status_that_is_not_a_placement_is_refused(status: dict[str, str]) -> None:
    with pytest.raises(ValueError):
        Placement.from_status("acme", status)


def test_a_backup_is_written_as_the_status_model_with_its_tables_in_order() -> None:
    checksums = {"orders": TableChecksum(rows=2, md5="b" * 32), "customers": TableChecksum(rows=1, md5="a" * 32)}
    backup = Backup(Path("/backups/acme.sql"), "c" * 64, 123, checksums)
    written = backup.to_status()
    assert written == {
        "location": "/backups/acme.sql",
        "sha256": "c" * 64,
        "bytes": 123,
        "tables": {"customers": {"rows": 1, "md5": "a" * 32}, "orders": {"rows": 2, "md5": "b" * 32}},
    }
    assert list(written["tables"]) == ["customers", "orders"]
    assert BackupStatus.model_validate(written) == backup.to_model()
