"""The local PostgreSQL server runs from wherever the checkout lies, and says where and as whom it ran."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

import paybill
from paybill.database.server import LocalPostgres


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def eventually(check: Callable[[], bool], timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user the server runs as that user, in place")
def test_a_data_directory_postgres_cannot_enter_moves_the_server_to_a_private_runtime_directory() -> None:
    private = Path(tempfile.mkdtemp(prefix="paybill-clone-"))  # 0700, as `mktemp -d`: postgres cannot enter
    server = LocalPostgres(private / "checkout" / ".state" / "postgres")
    try:
        with psycopg.connect(server.start(), connect_timeout=5) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        runtime = server.server_dir
        assert not runtime.is_relative_to(private)
        status = runtime.stat()
        assert pwd.getpwuid(status.st_uid).pw_name == "postgres" and status.st_mode & 0o777 == 0o700
        assert f"cannot enter {private}" in server.describe() and str(runtime) in server.describe()
        assert (server.data_dir / "superuser.password").stat().st_mode & 0o777 == 0o600
    finally:
        server.remove()
    assert not runtime.exists() and not server.data_dir.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres", connect_timeout=2)
    shutil.rmtree(private)


def interpreter_for(user: str, env: dict[str, str]) -> str | None:
    """A Python that `user` can run and that imports paybill and psycopg from here, if there is one."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        probe = subprocess.run(
            [
                "runuser",
                "-u",
                user,
                "--",
                "env",
                *[f"{k}={v}" for k, v in env.items()],
                candidate,
                "-c",
                "import paybill, psycopg",
            ],
            capture_output=True,
        )
        if probe.returncode == 0:
            return candidate
    return None


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
def test_as_a_user_other_than_root_the_server_runs_as_that_user_in_place() -> None:
    env = {
        "PYTHONPATH": os.pathsep.join(
            [str(Path(paybill.__file__).parents[1]), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
        )
    }
    python = interpreter_for("nobody", env)
    if python is None:
        pytest.skip("no Python here that the nobody user can run with this checkout's packages")
    home = Path(tempfile.mkdtemp(prefix="paybill-nobody-"))  # 0700, owned by nobody: only it can enter
    shutil.chown(home, "nobody")
    script = (
        "import sys; from pathlib import Path; import psycopg\n"
        "from paybill.database.server import LocalPostgres\n"
        "server = LocalPostgres(Path(sys.argv[1]))\n"
        "with psycopg.connect(server.start()) as conn: print(conn.execute('SELECT 1').fetchone()[0])\n"
        "print(server.describe()); print(server.server_dir); server.remove()"
    )
    try:
        ran = subprocess.run(
            [
                "runuser",
                "-u",
                "nobody",
                "--",
                "env",
                *[f"{k}={v}" for k, v in env.items()],
                python,
                "-c",
                script,
                str(home / "pg"),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert ran.returncode == 0, ran.stderr
        answer, described, where = ran.stdout.splitlines()
        assert answer == "1" and described.endswith(f"as nobody, data in {home / 'pg'}") and where == str(home / "pg")
        assert not (home / "pg").exists()
    finally:
        shutil.rmtree(home)


def test_remove_stops_a_server_another_instance_left_running() -> None:
    directory = Path(tempfile.mkdtemp(prefix="paybill-pg-"))
    left = LocalPostgres(directory / "postgres")
    left.start()
    pid = left.pid
    assert pid is not None
    LocalPostgres(directory / "postgres").remove()  # a new demo run, starting from nothing
    assert eventually(lambda: not alive(pid))
    assert not (directory / "postgres").exists()
    os.rmdir(directory)


@pytest.mark.skipif(os.geteuid() != 0, reason="runtime directories are used only as root")
def test_a_server_whose_starter_was_killed_is_stopped_by_the_next_start() -> None:
    """A test run or demo killed with SIGKILL cannot stop its server; the next start on the machine does."""
    directory = Path(tempfile.mkdtemp(prefix="paybill-pg-"))  # 0700: the server goes to a runtime directory
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from paybill.database.server import LocalPostgres\n"
                "server = LocalPostgres(Path(sys.argv[1])); server.start(); print(server.pid, "
                "server.server_dir, flush=True)\n"
                "time.sleep(600)"
            ),
            str(directory / "orphan"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert starter.stdout is not None
        pid, server_dir = starter.stdout.readline().split()
        starter.kill()
        starter.wait()
        assert alive(int(pid))  # the killed starter left its server running
        survivor = LocalPostgres(directory / "resumable")  # a new start sweeps the orphans
        survivor.start()
        assert eventually(lambda: not alive(int(pid)))
        assert Path(server_dir, "pgdata").exists()  # its data directory still exists: resumable, kept
        shutil.rmtree(directory / "orphan")
        survivor.stop()
        survivor.start()  # once its data directory is gone, the orphan's runtime directory goes too
        assert not Path(server_dir).exists() and survivor.server_dir.exists()
        survivor.remove()
    finally:
        starter.kill()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user the server runs in place: no runtime directory")
def test_a_killed_throwaway_server_and_half_made_runtime_directories_are_deleted_by_the_next_start() -> None:
    """A test session killed with SIGKILL leaves a throwaway server (durable=False) whose data nobody resumes:
    the next start deletes it whole. A runtime directory left half-made (no owner record, no data) is deleted
    once it is old enough that nobody can still be making it."""
    directory = Path(tempfile.mkdtemp(prefix="paybill-pg-"))  # 0700: the server goes to a runtime directory
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from paybill.database.server import LocalPostgres\n"
                "server = LocalPostgres(Path(sys.argv[1]), durable=False); server.start(); print(server.pid, "
                "server.server_dir, flush=True)\n"
                "time.sleep(600)"
            ),
            str(directory / "throwaway"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    survivor = LocalPostgres(directory / "survivor")
    half_made = [survivor.server_dir.parent / f"postgres-halfmade{age}" for age in ("old", "new")]
    try:
        assert starter.stdout is not None
        pid, server_dir = starter.stdout.readline().split()
        starter.kill()
        starter.wait()
        for path in half_made:
            (path / "socket").mkdir(parents=True)
        os.utime(half_made[0], (time.time() - 7200, time.time() - 7200))
        survivor.start()
        assert eventually(lambda: not alive(int(pid)))
        assert not Path(server_dir).exists() and not (directory / "throwaway").exists()
        assert not half_made[0].exists() and half_made[1].exists()  # a new one may still be being made
        survivor.remove()
    finally:
        starter.kill()
        for path in half_made:
            shutil.rmtree(path, ignore_errors=True)
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="as a normal user the server runs in place: no runtime directory")
def test_an_owner_record_the_server_user_wrote_never_gets_a_directory_deleted(tmp_path: Path) -> None:
    """The server user can write in its runtime directory: a record it forged (a dead starter, a throwaway mark,
    a victim directory) must not make root delete anything."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("kept")
    survivor = LocalPostgres(Path(tempfile.mkdtemp(prefix="paybill-pg-")) / "survivor")
    forged = survivor.server_dir.parent / "postgres-forged"
    forged.mkdir()
    (forged / "pgdata").mkdir()
    (forged / "owner").write_text(f"1 1\n{victim}\nthrowaway")
    postgres = pwd.getpwnam("postgres")
    for path in (forged, forged / "pgdata", forged / "owner"):
        os.chown(path, postgres.pw_uid, postgres.pw_gid)
    try:
        survivor.start()
        assert (victim / "precious").read_text() == "kept" and forged.exists()
    finally:
        survivor.remove()
        shutil.rmtree(forged, ignore_errors=True)


def test_remove_never_deletes_through_a_symbolic_link(tmp_path: Path) -> None:
    """A data directory that is a link (say, `ln -s ~/thesis state/postgres`) is unlinked, its target untouched."""
    precious = tmp_path / "precious"
    (precious / "chapters").mkdir(parents=True)
    (precious / "chapters" / "thesis.tex").write_text("years of work")
    link = tmp_path / "state" / "postgres"
    link.parent.mkdir()
    link.symlink_to(precious)
    LocalPostgres(link).remove()
    assert (precious / "chapters" / "thesis.tex").read_text() == "years of work"
    assert not link.is_symlink() and not link.exists()


class Interrupted(BaseException):
    """What the demo's SIGTERM handler raises."""


def test_a_helper_interrupted_by_a_signal_is_left_to_finish_and_stop_waits_for_it(tmp_path: Path) -> None:
    """A signal during initdb or `pg_ctl start` must not orphan the postmaster the helper is starting: the
    helper runs in its own session (a terminal's Ctrl-C does not reach it) and stop() waits for it."""

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    done = tmp_path / "helper.session"
    server = LocalPostgres(tmp_path / "postgres")
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(Interrupted):  # the helper signals its parent (us), then goes on working
            server._run("helper", ["sh", "-c", f"kill -TERM $PPID; sleep 0.5; cut -d' ' -f6 /proc/$$/stat > {done}"])
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert server.stop() is False  # waited for the helper; no server was started on this data
    assert done.exists(), "the helper was killed mid-way"
    assert int(done.read_text()) != os.getsid(0)


def test_a_signal_handled_while_the_helper_is_being_started_still_leaves_it_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process-directed signal may land on another thread, which no mask of the main thread holds back; Python
    then runs the (raising) handler in the main thread at its next check, which can be inside Popen, after the
    fork: the helper must be recorded all the same (r18: stop() did not wait, and the helper was cut short)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    bystander_done = threading.Event()
    bystander = threading.Thread(target=bystander_done.wait, args=(30,), daemon=True)
    bystander.start()

    class SignalledJustAfterTheFork(subprocess.Popen):  # type: ignore[type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            assert bystander.ident is not None
            signal.pthread_kill(bystander.ident, signal.SIGTERM)
            time.sleep(0.05)  # the main thread takes the GIL back, sees the signal and runs the handler here

    done = tmp_path / "helper.done"
    server = LocalPostgres(tmp_path / "postgres")
    monkeypatch.setattr(subprocess, "Popen", SignalledJustAfterTheFork)
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        with pytest.raises(Interrupted):
            server._run("helper", ["sh", "-c", f"sleep 0.5; echo finished > {done}"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        monkeypatch.undo()
        bystander_done.set()
    assert server.stop() is False
    assert done.exists(), "stop() did not wait for the helper"


def test_stop_says_whether_a_server_was_running(tmp_path: Path) -> None:
    server = LocalPostgres(tmp_path / "postgres")
    assert server.stop() is False  # nothing there yet
    server.start()
    pid = server.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)  # gone, its postmaster.pid left behind
    assert eventually(lambda: not alive(pid))
    assert server.stop() is False
    server.start()
    assert server.stop() is True
    server.remove()


def test_the_operators_database_keeps_acknowledged_commits_and_only_throwaway_data_may_not(
    tmp_path: Path, postgres: LocalPostgres
) -> None:
    """The demo's and the operator's server: fsync, synchronous commit and full page writes on, so a commit the
    operator was told succeeded survives a crash. The tests' shared server says it relaxes them (conftest)."""
    settings = ("fsync", "synchronous_commit", "full_page_writes")
    server = LocalPostgres(tmp_path / "postgres")
    server.start()
    try:
        with psycopg.connect(server.dsn) as conn:
            durable = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in settings}  # type: ignore[index]
    finally:
        server.remove()
    assert durable == dict.fromkeys(settings, "on")
    with psycopg.connect(postgres.dsn) as conn:
        relaxed = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in settings}  # type: ignore[index]
    assert relaxed == dict.fromkeys(settings, "off")
