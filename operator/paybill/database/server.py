"""A throwaway local PostgreSQL server on loopback: the image's PG binaries, or the pgserver wheel."""

from __future__ import annotations

import contextlib
import grp
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import threading
import time
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
SERVER_USER = "postgres"  # the account the server binaries run as when we are root (initdb refuses root)
# A session idle in a transaction (holding its locks) is ended after this, unless it SETs another value;
# production servers set the same in postgresql.conf (roles get it too: TenantDatabases.limit_sessions).
IDLE_IN_TRANSACTION_TIMEOUT = "60s"
PASSWORD_FILE = "superuser.password"  # in data_dir, 0600, owned by the user that runs LocalPostgres
# In a runtime server directory: `<pid> <start time>` of its starter, then data_dir, then THROWAWAY if not durable.
OWNER_FILE = "owner"
THROWAWAY = "throwaway"  # nobody resumes such a server: once its starter is gone, it is deleted whole
HALF_MADE_AFTER_S = 3600  # a runtime directory without owner record or data this old is a start killed midway
# Where the server's files go when SERVER_USER cannot enter data_dir (a clone under /root or `mktemp -d`):
# the first of these that is ours; each server gets a private 0700 directory in it, owned by SERVER_USER.
RUNTIME_BASES = (Path("/run/paybill"), Path(tempfile.gettempdir()) / f"paybill-{os.geteuid()}")
BIND_ATTEMPTS = 3  # a free port can be taken between choosing it and the server binding it
HELD_SIGNALS = (signal.SIGTERM, signal.SIGINT)
HELPER_GRACE_S = 90  # how long stop() waits for an interrupted helper (`pg_ctl start -t 60`) to finish


@dataclass
class LocalPostgres:
    """Start with :meth:`start`, stop with :meth:`stop`, delete everything with :meth:`remove`; :attr:`dsn`
    connects as the superuser and :meth:`describe` says which server ran, as whom and where.

    As root the server runs as the postgres user: in `data_dir` when that user can enter it, else in a
    private runtime directory (:data:`RUNTIME_BASES`); as anyone else it runs as the invoking user in
    `data_dir`; without PostgreSQL binaries (or a postgres user) the bundled pgserver wheel runs instead.
    Every login needs a password (scram-sha-256, over TCP and the socket alike): the superuser's is
    generated at initdb, kept in a 0600 file in `data_dir` (for restarts) and in the DSN only."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    # Acknowledged commits survive a crash (fsync, synchronous commit, full page writes). Only throwaway data, the
    # tests' and benchmarks', may turn this off for speed, and must say so.
    durable: bool = True
    _pgserver: Any = field(default=None, init=False, repr=False)
    _uri: str | None = field(default=None, init=False)
    _why: str = field(default="", init=False, repr=False)
    _helper: subprocess.Popen[str] | None = field(default=None, init=False, repr=False)  # initdb, pg_ctl running

    def __post_init__(self) -> None:
        # Absolute (the server resolves paths from its own working directory), links kept as links: remove()
        # must see a data directory that is a symbolic link as one, never delete what it points to.
        self.data_dir = Path(os.path.abspath(self.data_dir))

    @property
    def dsn(self) -> str:
        if self._uri is None:
            raise PostgresError("the server is not running")
        return self._uri

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    @property
    def server_dir(self) -> Path:
        """Where pgdata, the socket and the server log live (data_dir unless the server user cannot enter it)."""
        if not self.as_root or _blocked_parent(self.data_dir, SERVER_USER) is None:
            return self.data_dir
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return _runtime_base() / f"postgres-{digest}"

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "pgserver" if self._pgserver is not None else self.server_dir / "pgdata"

    @property
    def log_path(self) -> Path:
        return self.server_dir / "postgres.log"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while a server runs on this data (from postmaster.pid)."""
        with contextlib.suppress(OSError, ValueError, IndexError, PostgresError):
            return int((self.pgdata / "postmaster.pid").read_text().split()[0])
        return None

    def describe(self) -> str:
        if self._pgserver is not None:
            return f"the bundled pgserver wheel, as {_user()}, data in {self.pgdata} ({self._why})"
        where = f"as {SERVER_USER if self.as_root else _user()}, data in {self.server_dir}"
        return f"PostgreSQL from {find_binaries()} {where}" + (f" ({self._why})" if self._why else "")

    def _as_postgres(self, *argv: str) -> list[str]:
        """initdb refuses root: run the server binaries as the postgres user when we are root."""
        if self.as_root:
            return ["runuser", "-u", SERVER_USER, "--", *argv]
        return list(argv)

    def start(self) -> str:
        binaries = find_binaries()
        if binaries is None:
            return self._start_pgserver("no PostgreSQL server binaries found")
        if self.as_root and not _user_exists(SERVER_USER):
            return self._start_pgserver(f"root, and there is no {SERVER_USER} user to run the server binaries")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        server_dir = self._prepare_server_dir()
        socket_dir, pgdata = server_dir / "socket", server_dir / "pgdata"
        if not (pgdata / "PG_VERSION").exists():
            self._initdb(binaries, pgdata, socket_dir)
        password = _read_private(self.data_dir / PASSWORD_FILE)
        log = self.log_path  # statements in error may be logged: private to the server
        if not log.exists():
            _write_private(log, "", owner=SERVER_USER if self.as_root else None)
        for attempt in range(BIND_ATTEMPTS):
            try:
                self._pg_ctl_start(binaries, pgdata, socket_dir, log)
                break
            except PortTaken:
                if attempt == BIND_ATTEMPTS - 1:
                    raise
                self.port = free_port()
        self._uri = _uri(password, "127.0.0.1", self.port)
        return self._uri

    def _prepare_server_dir(self) -> Path:
        """data_dir, or a private runtime directory when the server user cannot enter data_dir."""
        server_dir = self.server_dir
        if server_dir == self.data_dir:
            if self.as_root:
                shutil.chown(self.data_dir, SERVER_USER, SERVER_USER)
                os.chmod(self.data_dir, 0o700)
            (server_dir / "socket").mkdir(mode=0o700, exist_ok=True)
            if self.as_root:
                shutil.chown(server_dir / "socket", SERVER_USER, SERVER_USER)
            return server_dir
        blocked = _blocked_parent(self.data_dir, SERVER_USER)
        self._why = f"the {SERVER_USER} user cannot enter {blocked}"
        sweep_orphans(server_dir.parent, keep=server_dir)
        _private_directory(server_dir, SERVER_USER)
        _private_directory(server_dir / "socket", SERVER_USER)
        record = f"{_process_identity(os.getpid())}\n{self.data_dir}" + ("" if self.durable else f"\n{THROWAWAY}")
        _write_private(server_dir / OWNER_FILE, record)
        return server_dir

    def _pg_ctl_start(self, binaries: Path, pgdata: Path, socket_dir: Path, log: Path) -> None:
        options = (
            f"-p {self.port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c max_connections=200 "
            f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT}"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        logged = log.stat().st_size
        try:
            self._run(
                "pg_ctl start",
                self._as_postgres(
                    str(binaries / "pg_ctl"),
                    "-D",
                    str(pgdata),
                    "-o",
                    options,
                    "-l",
                    str(log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                ),
                log=log,
            )
        except PostgresError:
            with log.open("rb") as text:
                text.seek(logged)
                if b"could not bind" in text.read() and not self.pid:
                    raise PortTaken(self.port) from None
            raise

    def _initdb(self, binaries: Path, pgdata: Path, socket_dir: Path) -> None:
        """initdb with scram-sha-256 for every connection; the generated superuser password reaches initdb
        through a 0600 file that exists only while initdb runs."""
        password = secrets.token_urlsafe(32)
        _write_private(self.data_dir / PASSWORD_FILE, password)
        pwfile = socket_dir / "initdb.pwfile"  # a directory the postgres user can enter
        _write_private(pwfile, password, owner=SERVER_USER if self.as_root else None)
        try:
            self._run(
                "initdb",
                self._as_postgres(
                    str(binaries / "initdb"),
                    "-D",
                    str(pgdata),
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-U",
                    SUPERUSER,
                    "--no-sync",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ),
            )
        finally:
            pwfile.unlink(missing_ok=True)

    def _start_pgserver(self, why: str = "") -> str:
        try:
            import pgserver  # type: ignore[import-not-found]
        except ImportError as exc:
            raise PostgresError(
                f"{why or 'pgserver requested'} and the pgserver wheel is not installed (pip install pgserver)"
            ) from exc
        self._why = why
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._pgserver = pgserver.get_server(str(self.data_dir / "pgserver"), cleanup_mode="stop")
        self._uri = _require_passwords(self._pgserver, self.data_dir)
        return self._uri

    def stop(self) -> bool:
        """Stop the server running on this data, whether this object or an earlier run started it; a helper
        that a signal interrupted (initdb, `pg_ctl start`) is waited for first. True if a server was running."""
        self._finish_helper()
        running = False
        if self._pgserver is not None:
            self._pgserver.cleanup()
            self._pgserver = None
            running = True
        elif (binaries := find_binaries()) is not None and (self.server_dir / "pgdata" / "postmaster.pid").exists():
            running = (pid := self.pid) is not None and _alive(pid)  # not a stale pid file
            self._run(
                "pg_ctl stop",
                self._as_postgres(
                    str(binaries / "pg_ctl"), "-D", str(self.server_dir / "pgdata"), "-m", "fast", "-w", "stop"
                ),
                check=False,
            )
        self._uri = None
        return running

    def _finish_helper(self) -> None:
        """Let an interrupted helper end (so that the server it starts is known), killed after a grace period."""
        helper, self._helper = self._helper, None
        if helper is None:
            return
        try:
            helper.communicate(timeout=HELPER_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(helper.pid, signal.SIGKILL)
            helper.communicate()

    def remove(self) -> None:
        """Stop the server and delete its data, its runtime directory and its password. A data directory that
        is a symbolic link is unlinked, never followed: neither what it points to nor a server there is touched."""
        if self.data_dir.is_symlink():
            self.data_dir.unlink()
            return
        self.stop()
        for directory in {self.server_dir, self.data_dir}:
            delete_tree(directory)

    def _run(self, what: str, argv: list[str], check: bool = True, log: Path | None = None) -> None:
        """Run a helper in its own session (a terminal's Ctrl-C does not cut it short). When a signal interrupts
        the wait (the demo's handlers raise), the helper is left running and recorded: stop() waits for it."""
        with _signals_held():  # a handler raising inside Popen, after the fork, would lose the helper
            self._helper = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        stdout, stderr = self._helper.communicate()
        returncode, self._helper = self._helper.returncode, None
        if check and returncode != 0:
            detail = (stderr or stdout).strip()
            if log is not None and log.exists():
                detail += "\n" + "\n".join(log.read_text(errors="replace").splitlines()[-5:])
            raise PostgresError(f"{what} failed: {detail}")


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and SIGINT arriving inside the block are handled as it ends. Blocking them in this thread's mask is
    not enough: a process-directed signal may land on another thread, and Python still runs the handler here.
    Only the main thread runs Python handlers (and may set them); elsewhere there is nothing to hold."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda received, _frame: held.append(received))
        for signum in HELD_SIGNALS
        if signal.getsignal(signum) is not None  # a handler set outside Python cannot be put back
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for received in held:
            signal.raise_signal(received)


class PortTaken(PostgresError):
    """The server could not bind its port (someone took it after it was chosen)."""


def delete_tree(path: Path) -> None:
    """Delete a real directory and everything in it (links inside are unlinked, never followed); a link or a
    file is unlinked by itself. Nothing outside `path` is ever deleted."""
    try:
        status = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISDIR(status.st_mode):
        shutil.rmtree(path, ignore_errors=True)  # refuses a link at the top, and does not follow one inside
    else:
        path.unlink()


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
        conn.execute(
            psycopg.sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                psycopg.sql.Identifier(SUPERUSER), psycopg.sql.Literal(password)
            )
        )
        hba, sockets = (
            str((conn.execute(query).fetchone() or ("",))[0])
            for query in ("SHOW hba_file", "SHOW unix_socket_directories")
        )
        socket_dir = sockets.split(",")[0].strip()
        Path(hba).write_text(
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
        )
        conn.execute(f"ALTER SYSTEM SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION_TIMEOUT}'")
        conn.execute("SELECT pg_reload_conf()")
    return f"postgresql://{SUPERUSER}:{password}@/postgres?host={socket_dir}"


def _user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _can_enter(directory: Path, user: pwd.struct_passwd, groups: set[int]) -> bool:
    status = directory.stat()
    if status.st_uid == user.pw_uid:
        return bool(status.st_mode & 0o100)
    if status.st_gid in groups:
        return bool(status.st_mode & 0o010)
    return bool(status.st_mode & 0o001)


def _blocked_parent(path: Path, name: str) -> Path | None:
    """The first existing ancestor of `path` (from the root down) that user `name` cannot enter, if any."""
    user = pwd.getpwnam(name)
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    for directory in reversed((path, *path.parents)):
        if directory.exists() and not _can_enter(directory, user, groups):
            return directory
    return None


def _runtime_base() -> Path:
    """The first of RUNTIME_BASES that is a real directory of ours that nobody else can write to."""
    refused = []
    for base in RUNTIME_BASES:
        with contextlib.suppress(OSError):
            base.mkdir(mode=0o711, exist_ok=True)
        try:
            status = base.lstat()
        except OSError:
            continue
        if stat.S_ISDIR(status.st_mode) and status.st_uid == os.geteuid() and not status.st_mode & 0o022:
            os.chmod(base, 0o711)  # others may pass through to their own private directory, not list it
            return base
        refused.append(str(base))
    raise PostgresError(
        f"no private runtime directory for the server (not ours or writable by others: "
        f"{', '.join(refused) or 'none could be made'})"
    )


def _private_directory(path: Path, owner: str) -> None:
    """Make `path` a 0700 directory owned by `owner`; an existing one must already be exactly that."""
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
        shutil.chown(path, owner, owner)
    status = path.lstat()
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != pwd.getpwnam(owner).pw_uid or status.st_mode & 0o077:
        raise PostgresError(f"{path} exists and is not a private directory of {owner}: refusing to use it")


def sweep_orphans(base: Path, keep: Path | None = None) -> list[Path]:
    """Stop the runtime servers in `base` whose owning process is gone (a test run or a demo killed before it
    could stop its server), and delete those whose data directory is gone too or that were throwaway (a
    resumable one is kept). A directory without an owner record is left alone unless it holds no data and is
    older than HALF_MADE_AFTER_S. Returns the directories whose server was stopped."""
    stopped = []
    for server_dir in sorted(base.glob("postgres-*")):
        owner = server_dir / OWNER_FILE
        if server_dir == keep:
            continue
        if not _ours(owner):  # the server user can write in server_dir, so only a record we wrote is believed
            if _half_made(server_dir):
                delete_tree(server_dir)
            continue
        identity, data_dir, *marks = [*owner.read_text().strip().split("\n"), ""]
        pid = identity.split()[0] if identity else ""
        if not pid.isdigit() or _process_identity(int(pid)) == identity:
            continue
        binaries = find_binaries()
        if binaries is not None and (server_dir / "pgdata" / "postmaster.pid").exists():
            subprocess.run(
                [
                    "runuser",
                    "-u",
                    SERVER_USER,
                    "--",
                    str(binaries / "pg_ctl"),
                    "-D",
                    str(server_dir / "pgdata"),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
                capture_output=True,
                stdin=subprocess.DEVNULL,
                check=False,
            )
            stopped.append(server_dir)
        if THROWAWAY in marks and data_dir:
            delete_tree(Path(data_dir))
        if not data_dir or not Path(data_dir).exists():
            delete_tree(server_dir)
    return stopped


def _ours(path: Path) -> bool:
    """A regular file this process's user owns (not a link, not a file the server user put there)."""
    try:
        status = path.lstat()
    except OSError:
        return False
    return stat.S_ISREG(status.st_mode) and status.st_uid == os.geteuid()


def _half_made(server_dir: Path) -> bool:
    """No data and old enough that no start can still be making it (the owner record follows the directory)."""
    with contextlib.suppress(OSError):
        old = time.time() - server_dir.lstat().st_mtime > HALF_MADE_AFTER_S
        return old and not (server_dir / "pgdata").exists()
    return False


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a killed postmaster nobody has reaped yet)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _process_identity(pid: int) -> str | None:
    """`<pid> <start time>`: survives pid reuse, since a new process with the same pid starts later."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return f"{pid} {fields[19]}"  # field 22 of stat: starttime, in clock ticks since boot
