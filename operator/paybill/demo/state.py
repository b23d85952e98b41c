"""The demo's state directory: made or adopted only when it is the demo's (a marker in it), private, locked for
the demo's life, and emptied of the demo's own entries only."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from ..database.server import LocalPostgres, delete_tree
from .console import DemoError

MARKER = ".paybill-demo"  # in every state directory the demo makes: only such a directory is ever touched
LOCK = "demo.lock"  # flock'd for the demo's life: one demo per state directory
AGENTS_RAN = "agents.ran"  # written once the agent steps ran on this data: a resumed run does not repeat them
# The names the demo creates: the only entries it ever deletes (what a user adds is left alone).
DEMO_ENTRIES = frozenset(
    {
        MARKER,
        LOCK,
        AGENTS_RAN,
        "postgres",
        "kubeconfig",
        "emulator.log",
        "operator.log",
        "backups",
        "audit",
        "terraform",
    }
)


def claim_state_dir(state_dir: Path) -> None:
    """Make the state directory (or adopt an empty one), private (0700), and mark it as the demo's. A non-empty
    directory without the marker is refused: the demo never empties a directory it did not make."""
    if state_dir.exists() and not state_dir.is_dir():
        raise DemoError(f"--state-dir {state_dir} is not a directory")
    if state_dir.exists() and any(state_dir.iterdir()) and not (state_dir / MARKER).is_file():
        raise DemoError(
            f"{state_dir} holds files the demo did not make (no {MARKER} in it); choose another --state-dir"
        )
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(state_dir, 0o700)
    (state_dir / MARKER).touch()


def lock_state_dir(state_dir: Path) -> int:
    """An exclusive lock on the (claimed) state directory, held while the returned descriptor is open: the
    demo's life, however it ends. A second demo on the same directory is refused, naming the first one's pid."""
    descriptor = os.open(state_dir / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(descriptor, 32, 0).decode(errors="replace").strip() or "?"
        os.close(descriptor)
        raise DemoError(f"state directory {state_dir} is in use by demo pid {holder}") from None
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)
    return descriptor


def fresh_state(state_dir: Path, resume: bool) -> list[str]:
    """Start from nothing (unless resuming): the previous run's server is stopped and the demo's own entries
    deleted. Anything else in the directory is left alone; its names are returned. Links are refused."""
    claim_state_dir(state_dir)
    for name in sorted(DEMO_ENTRIES):
        if (state_dir / name).is_symlink():
            raise DemoError(
                f"{state_dir / name} is a symbolic link (to {os.readlink(state_dir / name)}): the demo "
                "never follows a link out of its state directory; remove the link"
            )
    if not resume:
        LocalPostgres(state_dir / "postgres").remove()
        for name in DEMO_ENTRIES - {MARKER, LOCK}:
            delete_tree(state_dir / name)
    return sorted(entry.name for entry in state_dir.iterdir() if entry.name not in DEMO_ENTRIES)


def agents_already_ran(state_dir: Path, resume: bool) -> bool:
    """The agent gate and workflows ran on this data before (they change it: the refund would run again)."""
    return resume and (state_dir / AGENTS_RAN).is_file()


def record_agents_ran(state_dir: Path) -> None:
    (state_dir / AGENTS_RAN).touch()
