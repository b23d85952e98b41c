"""A Tenant's status is the operator's memory, not an order: what anyone who may write tenants/status forges there
never destroys data or files (outsider's review of issue 13, finding 2; the forged phase of finding 1 is a table
test of the decision, tests/test_tenant_reconcile.py). A backup is the operator's own file for this Tenant.

The real operator, the emulated API server and the session's real PostgreSQL.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from test_tenant_lifecycle import onboard, wait_phase

API = "paybill.dev/v1alpha1"
pytestmark = pytest.mark.slow


def forge(cluster: Any, name: str, fields: dict[str, Any]) -> None:
    cluster.kube.merge_patch(API, "tenants", name, {"status": fields}, subresource="status")


def test_a_forged_backup_never_deletes_another_file_nor_skips_the_tenants_own_backup(
    operator: Any, tmp_path: Path
) -> None:
    victim = tmp_path / "someone-elses-backup.sql"
    victim.write_text("the only copy")
    name = onboard(operator, "pooled", deletionPolicy="destroy")
    wait_phase(operator, name, "Active")
    forged = {"location": str(victim), "sha256": hashlib.sha256(victim.read_bytes()).hexdigest(), "bytes": 13}
    forge(operator, name, {"backup": forged})
    operator.kube.delete(API, "tenants", name)
    operator.eventually(lambda: operator.kube.get(API, "tenants", name) is None, timeout=60)
    assert victim.read_text() == "the only copy"
    taken = [
        e
        for e in operator.kube.list("v1", "events")
        if e["involvedObject"]["name"] == name and e["reason"] == "BackupTaken"
    ]
    assert taken and str(victim) not in taken[0]["message"]
