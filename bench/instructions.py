"""Instructions per cold decision, counted by valgrind (cachegrind): steady where wall-clock time is not.

`python -m bench.instructions RULES N` makes N cold decisions of the bench statement at RULES rules after a
warm-up; `count(rules)` runs it under cachegrind with N and with 0 decisions and returns the difference per
decision, so start-up and warm-up cancel out.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from paybill.policy import PolicyEngine, Schema

from .policy import BASE_DDL, PRINCIPAL, STATEMENT, TENANT, filler_tables, policy

DECISIONS = 1000
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def decide_cold(rules: int, decisions: int) -> None:
    engine = PolicyEngine(policy(rules), Schema.from_ddl(BASE_DDL + filler_tables(rules)))
    for n in range(50 + decisions):  # the first 50 warm up (imports done, caches of the policy filled)
        engine.clear_cache()
        engine.decide(PRINCIPAL, STATEMENT, [n], TENANT)


def _total(rules: int, decisions: int) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            str(rules),
            str(decisions),
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    found = _TOTAL.search(done.stderr)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output: {done.stderr[-500:]}")
    return int(found.group(1).replace(",", ""))


def count(rules: int, decisions: int = DECISIONS) -> int | None:
    """Instructions per cold decision at `rules` rules; None when valgrind is not installed."""
    if shutil.which("valgrind") is None:
        return None
    with ThreadPoolExecutor(2) as pool:
        base, full = pool.map(_total, (rules, rules), (0, decisions))
    return round((full - base) / decisions)


if __name__ == "__main__":
    decide_cold(int(sys.argv[1]), int(sys.argv[2]))
