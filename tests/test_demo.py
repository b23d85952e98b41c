"""`paybill demo` (what `make demo` runs) converges and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_demo_brings_sample_tenants_to_ready_and_stops_cleanly() -> None:
    state = Path(tempfile.mkdtemp(prefix="paybill-demo-"))
    os.chmod(state, 0o755)  # the PostgreSQL server runs as the postgres user
    result = subprocess.run([sys.executable, "-m", "paybill", "demo", "--state-dir", str(state), "--timeout", "60"],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "emulated Kubernetes API server" in result.stdout
    assert "all 4 tenants Ready" in result.stdout
    assert result.stdout.count("  DENIED ") == 5 and result.stdout.count("  ALLOWED ") == 2
    assert "only tenant acme's rows seen" in result.stdout and "globex customer" not in result.stdout
    assert "workflow/refund-order-13 Succeeded: open-orders ran (1 rows), refund ran (1 rows)" in result.stdout
    assert "workflow/tidy-up Denied: count-paid ran (1 rows), drop-paid refused (denied_by_rule); 1 of 3" \
        in result.stdout
    walk = [line for line in result.stdout.splitlines() if "-> tenant" in line]
    outcomes = [next(k for k in ("write ok", "write refused", "login refused") if k in line) for line in walk]
    assert outcomes == ["write ok", "write refused", "login refused", "write ok"]
    assert "stopped: operator, emulated API server, PostgreSQL" in result.stdout
    leftovers = subprocess.run(["pgrep", "-f", str(state)], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", f"processes left behind: {leftovers.stdout}"
