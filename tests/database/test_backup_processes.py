"""Backups under faults (issue 13 item 8): pg_dump dies with the process that started it, and two runs of one
backup take turns on its file, never interleave."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from paybill.api.tenant import Access
from paybill.database import Placement, TenantDatabases, restore_backup
from paybill.database.backups import Backup, BackupInProgress, Backups
from paybill.database.server import LocalPostgres

from .conftest import fresh

PASSWORD = "tenant-pw"
ROWS = 200_000  # enough that pg_dump is seen writing (megabytes) well before it ends


def eventually(condition: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.005)
    raise AssertionError(f"not within {timeout} s: {what}")


def load(dbs: TenantDatabases, placement: Placement, rows: int) -> None:
    with dbs.session(placement.database) as conn, conn.transaction():
        conn.execute(
            "INSERT INTO app.customers (tenant_id, id, name, email) "
            "SELECT %s, g, 'customer ' || g, 'c' || g || '@example.com' FROM generate_series(1, %s) g",
            (placement.tenant, rows),
        )


@pytest.fixture
def silo(databases: TenantDatabases) -> Iterator[Placement]:
    """A silo tenant (its backups run pg_dump) with ROWS customers."""
    tenant = fresh("dump")
    placement = databases.provision(tenant, "silo", PASSWORD)
    databases.set_access(placement, Access.FULL)
    load(databases, placement, ROWS)
    yield placement
    databases.remove(placement)
    databases.drop_role(tenant)


def children(parent: int, name: str) -> list[tuple[int, str]]:
    """(pid, start time) of `parent`'s living children called `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = process_stat(int(entry.name))
            if stat and stat[0] == f"({name})" and int(stat[2]) == parent and stat[1] != "Z":
                found.append((int(entry.name), stat[20]))
    return found


def process_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat as fields (the name first, in parentheses), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    head, _, rest = text.rpartition(")")
    return [head.split(" (", 1)[1].join("()"), *rest.split()]


def alive(pid: int, started: str) -> bool:
    """The same process (not a reused pid) still runs; a zombie is dead (no init may reap it here)."""
    stat = process_stat(pid)
    return stat is not None and stat[20] == started and stat[1] != "Z"


def writing(partial: Path) -> None:
    """Wait until pg_dump is writing rows into `partial` (past the schema head)."""
    eventually(lambda: partial.exists() and partial.stat().st_size > 64 * 1024, 60, f"{partial} being written")


def test_pg_dump_dies_with_the_process_that_started_it(
    databases: TenantDatabases, silo: Placement, tmp_path: Path, postgres: LocalPostgres
) -> None:
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from paybill.database import TenantDatabases
        dsn, backup_dir, tenant = sys.argv[1:]
        dbs = TenantDatabases(dsn, backup_dir=Path(backup_dir))
        dbs.backup(dbs.placement_for(tenant, "silo"), tenant)
        """
    )
    operator = subprocess.Popen(
        [sys.executable, "-c", script, postgres.dsn, str(tmp_path / "killed"), silo.tenant], stdin=subprocess.DEVNULL
    )
    dump: list[tuple[int, str]] = []
    try:
        dump = eventually(lambda: children(operator.pid, "pg_dump"), 60, "pg_dump started")  # type: ignore[assignment]
        pid, started = dump[0]
        os.kill(pid, signal.SIGSTOP)  # held mid-dump: it cannot finish on its own before its parent is killed
        operator.kill()
        operator.wait(timeout=10)
        eventually(lambda: not alive(pid, started), 10, f"pg_dump {pid} gone after its parent was SIGKILLed")
    finally:
        operator.kill()
        operator.wait(timeout=10)
        for pid, started in dump:  # the orphan, if the test failed: a process this test caused
            if alive(pid, started):
                os.kill(pid, signal.SIGKILL)


def test_two_backups_of_one_tenant_at_once_take_turns_and_leave_a_valid_dump(
    databases: TenantDatabases, silo: Placement, postgres: LocalPostgres
) -> None:
    assert databases.backup_dir is not None
    partial = databases.backup_dir / f"{silo.tenant}.partial"
    results: dict[str, Backup | BaseException] = {}

    def run(label: str) -> None:
        try:
            results[label] = databases.backup(silo, silo.tenant)
        except BaseException as exc:  # reported by the assertions below
            results[label] = exc

    first = threading.Thread(target=run, args=("first",))
    first.start()
    writing(partial)  # the second starts while pg_dump writes the first's file
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(timeout=120)
    second.join(timeout=120)
    assert not first.is_alive() and not second.is_alive()
    assert all(isinstance(r, Backup) for r in results.values()), results
    final = results["second"]
    assert isinstance(final, Backup)
    assert hashlib.sha256(final.path.read_bytes()).hexdigest() == final.sha256
    assert final.checksums["customers"].rows == ROWS and not partial.exists()
    target = f"restore_{silo.tenant.replace('-', '_')}"
    restore_backup(postgres.dsn, final.path, target)
    assert databases.checksums(Placement(silo.tenant, silo.isolation, target, silo.schema, silo.role)) == (
        databases.checksums(silo)
    )


def test_a_second_backup_that_cannot_wait_refuses_clearly_and_leaves_the_first_alone(
    databases: TenantDatabases, silo: Placement
) -> None:
    assert databases.backup_dir is not None
    partial = databases.backup_dir / f"{silo.tenant}.partial"
    impatient = Backups(databases.connections, databases.backup_dir, lock_wait=0)
    results: list[Backup | BaseException] = []

    def run() -> None:
        try:
            results.append(databases.backup(silo, silo.tenant))
        except BaseException as exc:  # reported by the assertions below
            results.append(exc)

    first = threading.Thread(target=run)
    first.start()
    writing(partial)
    with pytest.raises(BackupInProgress, match="another backup is being written to"):
        impatient.backup(silo, silo.tenant)
    first.join(timeout=120)
    assert len(results) == 1 and isinstance(results[0], Backup), results
    assert hashlib.sha256(results[0].path.read_bytes()).hexdigest() == results[0].sha256
    assert results[0].checksums == databases.checksums(silo)
