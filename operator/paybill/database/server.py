"""A throwaway local PostgreSQL server on loopback: the image's PG binaries, or the pgserver wheel."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SEARCH_DIRS = ("/usr/local/bin", "/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/bin")


class PostgresError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def find_binaries() -> Path | None:
    """The directory holding initdb and pg_ctl, if this machine has PostgreSQL installed."""
    initdb = shutil.which("initdb")
    candidates = ([str(Path(initdb).parent)] if initdb else []) + list(SEARCH_DIRS)
    for directory in candidates:
        if (Path(directory) / "initdb").exists() and (Path(directory) / "pg_ctl").exists():
            return Path(directory)
    return None


def tool_path(name: str) -> str:
    """A PostgreSQL client program (pg_dump, psql): beside the server binaries, then the distribution's
    versioned directories (newest first), then the pgserver wheel, then PATH."""
    directories = [d for d in (find_binaries(),) if d is not None]
    directories += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda d: d.parent.name, reverse=True)
    with contextlib.suppress(ImportError):
        import pgserver  # type: ignore[import-not-found]

        directories.append(Path(pgserver.__file__).parent / "pginstall" / "bin")
    for directory in directories:
        if (directory / name).exists():
            return str(directory / name)
    found = shutil.which(name)
    if found is None:
        raise PostgresError(f"{name} not found: install the PostgreSQL client programs")
    return found


SUPERUSER = "postgres"
# A session idle in a transaction (holding its locks) is ended after this, unless it SETs another value;
# production servers set the same in postgresql.conf (roles get it too: TenantDatabases.limit_sessions).
IDLE_IN_TRANSACTION_TIMEOUT = "60s"
PASSWORD_FILE = "superuser.password"  # in data_dir, 0600, owned by the user that runs LocalPostgres


@dataclass
class LocalPostgres:
    """Start with :meth:`start`, stop with :meth:`stop`; :attr:`dsn` connects as the superuser.

    Every login needs a password (scram-sha-256, over TCP and the socket alike): the superuser's is
    generated at initdb, kept in a 0600 file beside the data (for restarts) and in the DSN only."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    _pgserver: Any = field(default=None, init=False, repr=False)
    _uri: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.data_dir = self.data_dir.resolve()  # the server resolves paths from its own working directory

    @property
    def dsn(self) -> str:
        if self._uri is None:
            raise PostgresError("the server is not running")
        return self._uri

    def _as_postgres(self, *argv: str) -> list[str]:
        """initdb refuses root: run the server binaries as the postgres user when we are root."""
        if os.geteuid() == 0:
            return ["runuser", "-u", "postgres", "--", *argv]
        return list(argv)

    def start(self) -> str:
        binaries = find_binaries()
        if binaries is None:
            return self._start_pgserver()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            _require_traversable(self.data_dir.parent)
        socket_dir = self.data_dir / "socket"
        pgdata = self.data_dir / "pgdata"
        socket_dir.mkdir(exist_ok=True)
        if os.geteuid() == 0:
            for path in (self.data_dir, socket_dir):
                shutil.chown(path, "postgres", "postgres")
            os.chmod(self.data_dir, 0o755)
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(binaries, pgdata, socket_dir)
        password = _read_private(self.data_dir / PASSWORD_FILE)
        options = (f"-p {self.port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT}")
        log = self.data_dir / "postgres.log"  # statements in error may be logged: private to the server
        if not log.exists():
            _write_private(log, "", owner="postgres" if os.geteuid() == 0 else None)
        self._run("pg_ctl start", self._as_postgres(str(binaries / "pg_ctl"), "-D", str(pgdata), "-o", options,
                                                    "-l", str(log), "-w", "-t", "60", "start"), log=log)
        self._uri = _uri(password, "127.0.0.1", self.port)
        return self._uri

    def _initdb(self, binaries: Path, pgdata: Path, socket_dir: Path) -> None:
        """initdb with scram-sha-256 for every connection; the generated superuser password reaches initdb
        through a 0600 file that exists only while initdb runs."""
        password = secrets.token_urlsafe(32)
        _write_private(self.data_dir / PASSWORD_FILE, password)
        pwfile = socket_dir / "initdb.pwfile"  # a directory the postgres user can enter
        _write_private(pwfile, password, owner="postgres" if os.geteuid() == 0 else None)
        try:
            self._run("initdb", self._as_postgres(
                str(binaries / "initdb"), "-D", str(pgdata), "--auth-host=scram-sha-256",
                "--auth-local=scram-sha-256", f"--pwfile={pwfile}", "-U", SUPERUSER, "--no-sync", "-E", "UTF8",
                "--locale=C"))
        finally:
            pwfile.unlink(missing_ok=True)

    def _start_pgserver(self) -> str:
        try:
            import pgserver  # type: ignore[import-not-found]
        except ImportError as exc:
            raise PostgresError("no PostgreSQL binaries found and the pgserver wheel is not installed "
                                "(pip install pgserver)") from exc
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._pgserver = pgserver.get_server(str(self.data_dir / "pgserver"), cleanup_mode="stop")
        self._uri = _require_passwords(self._pgserver, self.data_dir)
        return self._uri

    def stop(self) -> None:
        if self._pgserver is not None:
            self._pgserver.cleanup()
            self._pgserver = None
        elif self._uri is not None and (binaries := find_binaries()) is not None:
            self._run("pg_ctl stop", self._as_postgres(str(binaries / "pg_ctl"), "-D",
                                                       str(self.data_dir / "pgdata"), "-m", "fast", "-w", "stop"),
                      check=False)
        self._uri = None

    @staticmethod
    def _run(what: str, argv: list[str], check: bool = True, log: Path | None = None) -> None:
        result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            if log is not None and log.exists():
                detail += "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-5:])
            raise PostgresError(f"{what} failed: {detail}")


def _uri(password: str, host: str, port: int | str) -> str:
    return f"postgresql://{SUPERUSER}:{password}@{host}:{port}/postgres"


def _write_private(path: Path, text: str, owner: str | None = None) -> None:
    """Create `path` as 0600 from the start (never a wider mode, even for a moment)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(text + "\n")
    if owner is not None:
        shutil.chown(path, owner, owner)


def _read_private(path: Path) -> str:
    if not path.exists():
        raise PostgresError(f"{path} is missing: the data directory was not made by LocalPostgres; remove it")
    if path.stat().st_mode & 0o077:
        raise PostgresError(f"{path} is readable by others (mode {oct(path.stat().st_mode & 0o777)})")
    return path.read_text().strip()


def _require_passwords(server: Any, data_dir: Path) -> str:
    """pgserver runs initdb with trust: give the superuser a password, then require one for every login."""
    import psycopg

    path = data_dir / PASSWORD_FILE
    if not path.exists():
        _write_private(path, secrets.token_urlsafe(32))
    password = _read_private(path)
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
            psycopg.sql.Identifier(SUPERUSER), psycopg.sql.Literal(password)))
        hba, sockets = (str((conn.execute(query).fetchone() or ("",))[0])
                        for query in ("SHOW hba_file", "SHOW unix_socket_directories"))
        socket_dir = sockets.split(",")[0].strip()
        Path(hba).write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n"
                             "host all all ::1/128 scram-sha-256\n")
        conn.execute(f"ALTER SYSTEM SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")
        conn.execute("SELECT pg_reload_conf()")
    return f"postgresql://{SUPERUSER}:{password}@/postgres?host={socket_dir}"


def _require_traversable(directory: Path) -> None:
    """The server runs as the postgres user, which must be able to enter every parent directory."""
    for parent in (directory, *directory.parents):
        if not parent.stat().st_mode & 0o001:
            raise PostgresError(f"the postgres user cannot enter {parent} (mode "
                                f"{oct(parent.stat().st_mode & 0o777)}); put the data directory elsewhere")


@contextlib.contextmanager
def running(data_dir: Path) -> Iterator[LocalPostgres]:
    server = LocalPostgres(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
