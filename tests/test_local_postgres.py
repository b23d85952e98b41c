"""The local PostgreSQL server runs from wherever the checkout lies, and says where and as whom it ran."""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

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
