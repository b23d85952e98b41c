"""Local subprocess execution: each command in its own process group, killed as a whole at its deadline."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import RunTimedOut

GRACE_SECONDS = 3.0  # between SIGTERM (Terraform saves what it can) and SIGKILL


@dataclass(frozen=True)
class Completed:
    exit_code: int
    stdout: str
    stderr: str


def run(
    argv: Sequence[str], cwd: Path, env: Mapping[str, str], deadline: float, timeout: float, command: str
) -> Completed:
    """Run `argv` until it exits or `deadline` (time.monotonic, the end of a run of `timeout` seconds) passes;
    then its whole process group goes."""
    process = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=max(deadline - time.monotonic(), 0.01))
    except subprocess.TimeoutExpired:
        kill_group(process)
        raise RunTimedOut(command, timeout, process.pid) from None
    except BaseException:
        kill_group(process)
        raise
    return Completed(process.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, SIGKILL whatever is left after a grace period, and reap the leader."""
    group = process.pid  # start_new_session: the leader's pid is the group id
    _signal_group(group, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=GRACE_SECONDS)
    _signal_group(group, signal.SIGKILL)  # children (local-exec, providers) may outlive the leader
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.communicate(timeout=GRACE_SECONDS)


def group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _signal_group(group: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(group, sig)
