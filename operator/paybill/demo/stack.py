"""The stack the demo runs: its children (the local PostgreSQL server, the emulated API server, the operator),
each in its own session, watched so that any one exiting ends the demo, and stopped in reverse order."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import kubernetes

from ..api.crdgen import all_crds
from ..database.server import LocalPostgres
from ..handlers.settings import DATABASE_URL_ENV, STATE_DIR_ENV
from ..kubeclient import Kube
from ..workflows.approvals import APPROVER_ROLE, approver_cluster_role
from .console import DemoError, say
from .waiting import wait_until

LOG_TAIL_LINES = 20


class Interrupted(BaseException):
    """SIGTERM or SIGINT: a BaseException, so that no `except Exception` on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class ChildExited(Exception):
    def __init__(self, child: Child, how: str) -> None:
        super().__init__(f"{child.name} exited ({how})")
        self.child, self.how = child, how


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


@dataclass
class Child:
    """One process of the stack: a subprocess of ours, or the PostgreSQL server (daemonized by pg_ctl)."""

    name: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    postgres: LocalPostgres | None = None
    postmaster: int | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else self.postmaster

    def exited(self) -> str | None:
        """How it ended, or None while it runs."""
        if self.process is not None:
            code = self.process.poll()
            if code is None:
                return None
            return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
        if self.postgres is not None and self.postmaster is None:
            return None  # still starting
        return None if self.postmaster is not None and alive(self.postmaster) else "its server process is gone"

    @property
    def label(self) -> str:
        return "PostgreSQL" if self.postgres is not None else self.name

    def stop(self) -> bool:
        """Stop it (PostgreSQL: after a start a signal interrupted has finished); True if it was running."""
        if self.postgres is not None:
            running = self.postgres.stop()
            if self.postmaster is not None and alive(self.postmaster):
                running = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.postmaster, signal.SIGQUIT)  # immediate shutdown
            return running
        if self.process is not None:
            running = self.process.poll() is None
            stop_process_group(self.process)
            return running
        return False


def start_child(name: str, argv: list[str], log: Path, env: dict[str, str] | None = None) -> Child:
    """A subprocess in its own session (a terminal's Ctrl-C reaches only the demo, which stops it in order)
    that gets SIGTERM should the demo itself die without cleaning up."""
    descriptor = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    os.fchmod(descriptor, 0o600)  # an earlier run's log may be wider: statements in error are logged
    with os.fdopen(descriptor, "wb") as out:
        process = subprocess.Popen(
            argv,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_terminate_with_parent,
        )
    return Child(name, log, process=process)


def _terminate_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process_group(process: subprocess.Popen[bytes], grace: float = 10) -> None:
    """SIGTERM the child and everything it started (its session), SIGKILL what is left after `grace`."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # grandchildren that outlived the child


@dataclass
class Stack:
    """The demo's children, watched: every wait checks them, so any one exiting ends the demo at once."""

    children: list[Child] = field(default_factory=list)

    def add(self, child: Child) -> Child:
        self.children.append(child)
        return child

    def check(self) -> None:
        for child in self.children:
            if (how := child.exited()) is not None:
                raise ChildExited(child, how)

    def blame(self, grace: float = 2.0) -> None:
        """After an error: if a child exited (or is exiting), raise that instead."""
        wait_until(lambda: None, grace, self.check)

    def stop(self) -> list[str]:
        """Stop every child, the last started first; the labels of those that were still running."""
        stopped = [child.label for child in reversed(self.children) if child.stop()]
        self.children.clear()
        return stopped


def operator_env(
    kubeconfig: Path, database_url: str, state_dir: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The caller's environment (PATH, HOME, locale...) without its PAYBILL_* settings, which are meant for a
    real operator, plus the demo's own: its cluster, its database, backups in its state directory (0700), and
    `extra` (the AWS part's moto endpoint and provider mirror)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("PAYBILL_")}
    own = {"KUBECONFIG": str(kubeconfig), DATABASE_URL_ENV: database_url, STATE_DIR_ENV: str(state_dir)}
    return {**inherited, **own, **(extra or {})}


def database_hint(dsn: str, password_file: Path) -> str:
    """A shell line that sets PAYBILL_DATABASE_URL to `dsn`, reading the password from its 0600 file when the
    line runs: the password itself is never printed."""
    password = password_file.read_text().strip()
    elided = dsn.replace(f":{password}@", f":$(cat {shlex.quote(str(password_file))})@", 1)
    if password in elided:
        raise DemoError("the database URL does not have the expected form; not printing it")
    return f'export PAYBILL_DATABASE_URL="{elided}"'


def start_postgres(stack: Stack, state_dir: Path, resume: bool) -> tuple[LocalPostgres, str]:
    """The local PostgreSQL server, watched from before it starts (stopped even if a signal lands while pg_ctl
    is starting it); the server and its superuser URL."""
    postgres = LocalPostgres(state_dir / "postgres")
    say("starting a local PostgreSQL server (" + ("resuming its data" if resume else "throwaway, loopback only") + ")")
    server = stack.add(Child("PostgreSQL server", postgres.log_path, postgres=postgres))
    database_url = postgres.start()
    server.postmaster = postgres.pid
    say(f"  PostgreSQL ready on 127.0.0.1:{postgres.port} (pid {postgres.pid}): {postgres.describe()}")
    return postgres, database_url


def start_emulator(stack: Stack, state_dir: Path, port: int | None, timeout: float) -> Path:
    """The emulated API server (`paybill emulator`); its kubeconfig once it listens."""
    kubeconfig = state_dir / "kubeconfig"
    kubeconfig.unlink(missing_ok=True)
    emulator = stack.add(
        start_child(
            "emulated API server",
            [sys.executable, "-m", "paybill", "emulator", "--port", str(port or 0), "--kubeconfig", str(kubeconfig)],
            state_dir / "emulator.log",
        )
    )
    url = wait_until(lambda: _listening_url(emulator.log), timeout, stack.check)
    if url is None:
        raise DemoError(f"the emulated API server did not start within {timeout:.0f}s; see {emulator.log}")
    say(f"emulated Kubernetes API server on {url} (pid {emulator.pid}; not a real cluster)")
    return kubeconfig


def register_crds(kube: Kube) -> None:
    """The CRDs, and the approver ClusterRole the chart ships (bound to a person, it approves workflow steps)."""
    for crd in all_crds():
        kube.apply(crd)
    kube.apply(approver_cluster_role())
    say(f"  {len(all_crds())} Paybill CRDs registered, and ClusterRole {APPROVER_ROLE}")


def start_operator(
    stack: Stack, state_dir: Path, kubeconfig: Path, database_url: str, extra: dict[str, str] | None = None
) -> None:
    operator = stack.add(
        start_child(
            "operator",
            [sys.executable, "-m", "paybill", "operator"],
            state_dir / "operator.log",
            operator_env(kubeconfig, database_url, state_dir, extra),
        )
    )
    say(f"operator started (pid {operator.pid}, log {operator.log})")


def _listening_url(log: Path) -> str | None:
    """The emulator's URL, once it has written its kubeconfig (it prints the export line after that)."""
    lines = tail(log, 50)
    if not any("export KUBECONFIG=" in line for line in lines):
        return None
    return next((line.split(" listening on ")[1].strip() for line in lines if " listening on " in line), "?")


def client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
