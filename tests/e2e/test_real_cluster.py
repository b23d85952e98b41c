"""Against a real cluster (kind + Helm), run by `make e2e` only when one is reachable."""

from __future__ import annotations

import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def test_crds_are_established_on_the_real_cluster() -> None:
    for name in ("tenants", "plans", "subscriptions", "agentpolicies", "agentworkflows"):
        result = subprocess.run(
            ["kubectl", "wait", "--for=condition=Established", "--timeout=60s", f"crd/{name}.paybill.dev"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
