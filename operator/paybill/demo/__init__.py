"""`paybill demo`: the whole stack on one machine (emulated API server + local PostgreSQL + operator)."""

from __future__ import annotations

import base64
import contextlib
import ctypes
import fcntl
import functools
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import kubernetes
import psycopg
import yaml

from ..api import API_VERSION
from ..api.crdgen import all_crds
from ..database import Placement, TenantDatabases
from ..database.agents.guard import ExecutionGuard
from ..database.agents.install import tenant_schema
from ..database.server import PASSWORD_FILE, LocalPostgres, PostgresError, delete_tree
from ..handlers.settings import DATABASE_URL_ENV, STATE_DIR_ENV
from ..kubeclient import Kube, KubeError
from ..lifecycle.conditions import is_true
from ..policy import PolicyEngine
from ..policy.check import load_policy

REPO = Path(__file__).resolve().parents[3]
MARKER = ".paybill-demo"  # in every state directory the demo makes: only such a directory is ever touched
LOCK = "demo.lock"  # flock'd for the demo's life: one demo per state directory
AGENTS_RAN = "agents.ran"  # written once the agent steps ran on this data: a resumed run does not repeat them
# The names the demo creates: the only entries it ever deletes (what a user adds is left alone).
DEMO_ENTRIES = frozenset(
    {MARKER, LOCK, AGENTS_RAN, "postgres", "kubeconfig", "emulator.log", "operator.log", "backups"}
)
POLL_S = 0.2  # how often every wait looks at the children: a child's exit is noticed within this
LOG_TAIL_LINES = 20


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in load_manifests_from(path)]


AGENT_SAMPLES = ("agents/support-policy.yaml", "agents/workflows.yaml")  # the agent gate's and workflows' input


def check_samples(samples: Path) -> list[dict[str, Any]]:
    """The manifests to apply, read before anything starts: a directory of YAML with Tenants, and the agent
    samples beside them; anything else is a DemoError saying what is wrong."""
    if not samples.is_dir():
        raise DemoError(f"--samples {samples}: no such directory")
    if not any(samples.glob("*.yaml")):
        raise DemoError(f"--samples {samples}: no *.yaml manifests in it")
    manifests: list[dict[str, Any]] = []
    for path in [*sorted(samples.glob("*.yaml")), *(samples / name for name in AGENT_SAMPLES)]:
        shown = path.relative_to(samples)
        if not path.is_file():
            raise DemoError(f"--samples {samples}: {shown} is missing (the agent gate's policy and workflows)")
        try:
            documents = load_manifests_from(path)
        except yaml.YAMLError as error:
            raise DemoError(f"--samples {samples}: {shown} is not YAML: {error}") from None
        manifests += documents if path.parent == samples else []
    unnamed = [
        m
        for m in manifests
        if not isinstance(m, dict) or not m.get("kind") or not (m.get("metadata") or {}).get("name")
    ]
    if unnamed or not any(m.get("kind") == "Tenant" for m in manifests):
        raise DemoError(
            f"--samples {samples}: " + ("a manifest without kind or metadata.name" if unnamed else "no Tenant")
        )
    return manifests


def apply_samples(kube: Kube, manifests: list[dict[str, Any]]) -> None:
    """Apply each manifest, saying what happened; one the API server refuses is a DemoError with its message."""
    for manifest in manifests:
        shown = f"{manifest['kind'].lower()}/{manifest['metadata']['name']}"
        try:
            result = kube.apply(manifest)
        except KubeError as error:
            raise DemoError(f"{shown} refused by the API server: {error}") from None
        say(f"  {shown} {result}")


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

    def wait_for(self, probe: Callable[[], T | None], timeout: float) -> T | None:
        """`probe()` until it returns something truthy (returned) or `timeout` passes (None)."""
        deadline = time.monotonic() + timeout
        while True:
            self.check()
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL_S)

    def blame(self, grace: float = 2.0) -> None:
        """After an error: if a child exited (or is exiting), raise that instead."""
        self.wait_for(lambda: None, grace)

    def stop(self) -> list[str]:
        """Stop every child, the last started first; the labels of those that were still running."""
        stopped = [child.label for child in reversed(self.children) if child.stop()]
        self.children.clear()
        return stopped


T = TypeVar("T")


def operator_env(kubeconfig: Path, database_url: str, state_dir: Path) -> dict[str, str]:
    """The caller's environment (PATH, HOME, locale...) without its PAYBILL_* settings, which are meant for a
    real operator, plus the demo's own: its cluster, its database, backups in its state directory (0700)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("PAYBILL_")}
    return {**inherited, "KUBECONFIG": str(kubeconfig), DATABASE_URL_ENV: database_url, STATE_DIR_ENV: str(state_dir)}


def database_hint(dsn: str, password_file: Path) -> str:
    """A shell line that sets PAYBILL_DATABASE_URL to `dsn`, reading the password from its 0600 file when the
    line runs: the password itself is never printed."""
    password = password_file.read_text().strip()
    elided = dsn.replace(f":{password}@", f":$(cat {shlex.quote(str(password_file))})@", 1)
    if password in elided:
        raise DemoError("the database URL does not have the expected form; not printing it")
    return f'export PAYBILL_DATABASE_URL="{elided}"'


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


class DemoError(Exception):
    pass


def run_demo(state_dir: Path, samples: Path, keep: bool, port: int | None, timeout: float, resume: bool = False) -> int:
    """The whole demo; every way out (success, failure, a child exiting, SIGTERM, Ctrl-C) stops every child."""
    state_dir = state_dir.resolve()
    stack = Stack()
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    lock = None
    try:
        check_samples(samples)
        claim_state_dir(state_dir)
        lock = lock_state_dir(state_dir)
        kept = fresh_state(state_dir, resume)
        say("Paybill demo: emulated Kubernetes API + local PostgreSQL + the Paybill operator")
        if kept:
            say(f"  left alone in {state_dir} (not the demo's): {', '.join(kept)}")
        return _run(stack, state_dir, samples, keep, port, timeout, resume)
    except ChildExited as exited:
        say(f"FAILED: the {exited} -- last lines of {exited.child.log}:")
        print("\n".join(f"  | {line}" for line in tail(exited.child.log)) or "  | (empty)", flush=True)
        return 1
    except (DemoError, PostgresError, KubeError) as error:
        say(f"FAILED: {error}")
        return 1
    except Interrupted as interrupted:
        say(f"{interrupted}: stopping")
        return 128 + interrupted.signum
    finally:
        for sig in previous:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup short
        if stopped := stack.stop():
            say(f"stopped: {', '.join(stopped)}")
        if lock is not None:
            os.close(lock)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _interrupt(signum: int, _frame: object) -> None:
    raise Interrupted(signum)


def _run(
    stack: Stack, state_dir: Path, samples: Path, keep: bool, port: int | None, timeout: float, resume: bool
) -> int:
    postgres = LocalPostgres(state_dir / "postgres")
    say("starting a local PostgreSQL server (" + ("resuming its data" if resume else "throwaway, loopback only") + ")")
    server = stack.add(Child("PostgreSQL server", postgres.log_path, postgres=postgres))  # stopped even if
    database_url = postgres.start()  # a signal lands while pg_ctl is starting it
    server.postmaster = postgres.pid
    say(f"  PostgreSQL ready on 127.0.0.1:{postgres.port} (pid {postgres.pid}): {postgres.describe()}")
    kubeconfig = state_dir / "kubeconfig"
    kubeconfig.unlink(missing_ok=True)
    emulator = stack.add(
        start_child(
            "emulated API server",
            [sys.executable, "-m", "paybill", "emulator", "--port", str(port or 0), "--kubeconfig", str(kubeconfig)],
            state_dir / "emulator.log",
        )
    )
    url = stack.wait_for(lambda: _listening_url(emulator.log), timeout)
    if url is None:
        raise DemoError(f"the emulated API server did not start within {timeout:.0f}s; see {emulator.log}")
    say(f"emulated Kubernetes API server on {url} (pid {emulator.pid}; not a real cluster)")
    try:
        kube = Kube(_client_for(kubeconfig))
        for crd in all_crds():
            kube.apply(crd)
        say(f"  {len(all_crds())} Paybill CRDs registered")
        operator = stack.add(
            start_child(
                "operator",
                [sys.executable, "-m", "paybill", "operator"],
                state_dir / "operator.log",
                operator_env(kubeconfig, database_url, state_dir),
            )
        )
        say(f"operator started (pid {operator.pid}, log {operator.log})")
        return _converge(
            stack, kube, samples, keep, timeout, kubeconfig, database_url, postgres.data_dir / PASSWORD_FILE, resume
        )
    except Exception:
        stack.blame()
        raise


def _listening_url(log: Path) -> str | None:
    """The emulator's URL, once it has written its kubeconfig (it prints the export line after that)."""
    lines = tail(log, 50)
    if not any("export KUBECONFIG=" in line for line in lines):
        return None
    return next((line.split(" listening on ")[1].strip() for line in lines if " listening on " in line), "?")


def _converge(
    stack: Stack,
    kube: Kube,
    samples: Path,
    keep: bool,
    timeout: float,
    kubeconfig: Path,
    database_url: str,
    password_file: Path,
    resume: bool,
) -> int:
    manifests = check_samples(samples)
    apply_samples(kube, manifests)
    names = [m["metadata"]["name"] for m in manifests if m["kind"] == "Tenant"]
    say(f"waiting for {len(names)} tenants to become Ready")
    tenants = wait_for_tenants(stack, kube, names, timeout)
    print("\n".join(summary(tenants)), flush=True)
    ready = sum(is_true((t.get("status") or {}).get("conditions", []), "Ready") for t in tenants.values())
    if ready != len(names):
        say(f"FAILED: {ready}/{len(names)} tenants Ready after {timeout:.0f}s; see {kubeconfig.parent}/operator.log")
        return 1
    say(f"all {ready} tenants Ready")
    state_dir = kubeconfig.parent
    if agents_already_ran(state_dir, resume):
        say(
            "agent gate and workflows: already ran on this data (again, they would refund an order twice); "
            "skipped. Run without --resume to see them"
        )
    elif agent_gate(stack, kube, database_url, samples / "agents", timeout) and agent_workflows(
        stack, kube, samples / "agents", timeout
    ):
        record_agents_ran(state_dir)
    else:
        return 1
    if not billing_walk(stack, kube, "acme", timeout):
        return 1
    if keep:
        say(f"stack left running. In another shell:  export KUBECONFIG={kubeconfig}; kubectl get paybill")
        say(
            f"  its database (the password stays in {password_file}, mode 0600):  "
            f"{database_hint(database_url, password_file)}"
        )
        say("press Ctrl-C (or send SIGTERM) to stop everything")
        stack.wait_for(lambda: None, float("inf"))
    return 0


def wait_for_tenants(stack: Stack, kube: Kube, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll until every tenant is Ready, printing each phase change as it happens."""
    seen: dict[str, str] = {}
    tenants: dict[str, dict[str, Any]] = {}

    def all_ready() -> bool:
        nonlocal tenants
        listed = kube.list(API_VERSION, "tenants")
        tenants = {t["metadata"]["name"]: t for t in listed if t["metadata"]["name"] in names}
        for name, tenant in sorted(tenants.items()):
            status = tenant.get("status") or {}
            phase = status.get("phase") or "Pending"
            if seen.get(name) != phase:
                ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
                detail = f" ({ready['reason']}: {ready['message']})" if ready else ""
                say(f"  tenant {name:<10} {seen.get(name, '-'):>12} -> {phase}{detail}")
                seen[name] = phase
        return len(tenants) == len(names) and all(
            is_true((t.get("status") or {}).get("conditions", []), "Ready") for t in tenants.values()
        )

    stack.wait_for(all_ready, timeout)
    return tenants


def summary(tenants: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"{'TENANT':<10} {'PHASE':<10} {'READY':<6} {'PLAN':<11} {'ISOLATION':<10} NAMESPACE"]
    for name, tenant in sorted(tenants.items()):
        status = tenant.get("status") or {}
        ready = "True" if is_true(status.get("conditions", []), "Ready") else "False"
        lines.append(
            f"{name:<10} {status.get('phase', '-'):<10} {ready:<6} {status.get('plan', '-'):<11} "
            f"{status.get('isolation', '-'):<10} {status.get('namespace', '-')}"
        )
    return lines


def billing_walk(stack: Stack, kube: Kube, name: str, timeout: float) -> bool:
    """A payment failure, step by step: grace, read-only, suspended; then the payment, and service is back."""
    say(f"billing: payment failures for tenant {name}")
    steps = (
        ("past_due", 1, "Active", "full", "past due, inside the grace period: full service"),
        ("past_due", 30, "Active", "read_only", "grace period over: data is read-only"),
        ("unpaid", 30, "Suspended", "none", "unpaid: suspended, open sessions ended, logins refused"),
        ("active", None, "Active", "full", "paid: service restored"),
    )
    for billing, days, phase, access, story in steps:
        since = None if days is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - days * 86400))
        kube.merge_patch(
            API_VERSION, "subscriptions", name, {"spec": {"billingStatus": billing, "pastDueSince": since}}
        )
        status = stack.wait_for(functools.partial(_tenant_reached, kube, name, phase, access), timeout)
        if status is None:
            now = (kube.get(API_VERSION, "tenants", name) or {}).get("status") or {}
            say(
                f"FAILED: tenant {name} did not reach {phase} with access {access} (is {now.get('phase')}, "
                f"{now.get('access')})"
            )
            return False
        probe = _probe_tenant_login(kube, name)
        say(
            f"  {billing:<9} -> tenant {phase:<9} restriction {status.get('restriction'):<17} {story}; "
            f"as the tenant: {probe}"
        )
    return True


def _tenant_reached(kube: Kube, name: str, phase: str, access: str) -> dict[str, Any] | None:
    status = (kube.get(API_VERSION, "tenants", name) or {}).get("status") or {}
    return status if status.get("phase") == phase and status.get("access") == access else None


def _probe_tenant_login(kube: Kube, name: str) -> str:
    """Log in with the tenant's own credentials (from its Secret) and try a read and a write."""
    uri = _secret(kube, "paybill-database", f"tenant-{name}").get("uri", "")
    try:
        with psycopg.connect(uri, autocommit=True, connect_timeout=3) as conn:
            (rows,) = conn.execute("SELECT count(*) FROM customers").fetchone() or (0,)
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute("INSERT INTO customers (tenant_id, id, name) VALUES (%s, -1, 'probe')", (name,))
            except psycopg.errors.InsufficientPrivilege:
                return f"login ok, read {rows} rows, write refused"
            return f"login ok, read {rows} rows, write ok"
    except psycopg.OperationalError as error:
        return login_refused(str(error))


def login_refused(error: str) -> str:
    """The server's reason, from the last line of a failed connection's message."""
    last = (error.strip().splitlines() or ["?"])[-1]
    return f"login refused ({last.split(': ')[-1].strip()})"


HOSTILE = (
    "SELECT name, email FROM customers; DROP TABLE orders",
    "SELECT name, created_at FROM customers",
    "SELECT pg_read_file('/etc/passwd')",
    "DELETE FROM orders WHERE id = 11",
    "SELECT o.id FROM orders o UNION SELECT id FROM pg_catalog.pg_authid",
)
LEGITIMATE = (
    ("SELECT id, status, total FROM orders WHERE status = $1 ORDER BY id", ["open"]),
    ("UPDATE orders SET status = 'refunded' WHERE id = $1", [11]),
)


def _secret(kube: Kube, name: str, namespace: str) -> dict[str, str]:
    data = ((kube.get("v1", "secrets", name, namespace) or {}).get("data")) or {}
    return {key: base64.b64decode(value).decode() for key, value in data.items()}


def _seed(kube: Kube, tenant: str, first: int) -> None:
    """A few rows of the SaaS app's data, written by the tenant's own login role."""
    with psycopg.connect(_secret(kube, "paybill-database", f"tenant-{tenant}")["uri"], autocommit=True) as conn:
        for n in range(3):
            conn.execute(
                "INSERT INTO customers (tenant_id, id, name, email) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (tenant, first + n, f"{tenant} customer {n + 1}", f"c{n + 1}@{tenant}.test"),
            )
            conn.execute(
                "INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (tenant, first + n, first + n, ("open", "paid", "open")[n], 10 * (n + 1)),
            )


def agent_gate(
    stack: Stack, kube: Kube, database_url: str, directory: Path, timeout: float, tenant: str = "acme"
) -> bool:
    """Apply the sample AgentPolicy; the operator installs the agent's role; then the agent tries its luck."""
    for name, first in ((tenant, 11), ("globex", 21)):
        _seed(kube, name, first)
    manifest = yaml.safe_load((directory / "support-policy.yaml").read_text())
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    say(f"agent gate: agentpolicy/{name} in {namespace} {kube.apply(manifest)}")
    status: dict[str, Any] = (
        stack.wait_for(lambda: _status_in(kube, "agentpolicies", name, namespace, {"Ready"}), timeout) or {}
    )
    if status.get("phase") != "Ready":
        say(f"FAILED: agentpolicy/{name} is {status.get('phase') or 'not reconciled'}")
        return False
    say(f"  Ready: {next(c['message'] for c in status['conditions'] if c['type'] == 'Ready')}")
    say(f"  credentials in secret/{status['credentialsSecret']} (never in status, Events or logs)")
    tenant_status = (kube.get(API_VERSION, "tenants", tenant) or {}).get("status") or {}
    placement = tenant_status["database"]
    where = Placement.from_status(tenant, placement)
    engine = PolicyEngine(
        load_policy(directory / "support-policy.yaml").spec, tenant_schema(TenantDatabases(database_url), where)
    )
    login = _secret(kube, status["credentialsSecret"], namespace)["uri"]
    agent = manifest["spec"]["subjects"][0]
    admitted = True
    with ExecutionGuard(engine, login, agent, tenant) as guard:
        for statement in HOSTILE:
            outcome = guard.execute(statement)
            reason = outcome.decision.reasons[0] if outcome.decision.reasons else None
            say(f"  DENIED   {statement!r}: {reason.code + ': ' + reason.message if reason else 'no reason'}")
            admitted &= not outcome.executed
        for statement, params in LEGITIMATE:
            outcome = guard.execute(statement, params)
            admitted &= outcome.ok
            shown = (
                [", ".join(map(str, row)) for row in outcome.rows]
                if outcome.decision.statement == "select"
                else f"{outcome.rows_affected} row(s)"
            )
            say(f"  ALLOWED  {statement!r} {params}: {shown}")
            say(f"           ran as: {outcome.decision.sql}")
    say(
        "agent gate: hostile statements denied, legitimate ones ran, only tenant acme's rows seen"
        if admitted
        else "FAILED: the agent gate did not behave as expected"
    )
    return admitted


def agent_workflows(stack: Stack, kube: Kube, directory: Path, timeout: float) -> bool:
    """Submit the sample AgentWorkflows and report what each step did."""
    expected = {"refund-order-13": "Succeeded", "tidy-up": "Denied"}
    workflows = load_manifests_from(directory / "workflows.yaml")
    for manifest in workflows:
        say(f"agent workflow: agentworkflow/{manifest['metadata']['name']} {kube.apply(manifest)}")
    ok = True
    for manifest in workflows:
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        status = (
            stack.wait_for(
                functools.partial(
                    _status_in, kube, "agentworkflows", name, namespace, {"Succeeded", "Denied", "Failed"}
                ),
                timeout,
            )
            or {}
        )
        ran = status.get("steps", [])
        steps = ", ".join(
            f"{s['name']} "
            + (
                f"ran ({s['rowsReturned'] or s['rowsAffected']} rows)"
                if s["executed"]
                else f"refused ({s['reasons'][0]['code']})"
            )
            for s in ran
        )
        declared = len(manifest["spec"]["steps"])
        say(f"  workflow/{name} {status.get('phase')}: {steps}; {declared - len(ran)} of {declared} steps never ran")
        ok &= status.get("phase") == expected.get(name)
    if ok:
        say("agent workflows: every step checked and recorded in the audit log; rows are in a Secret, not in status")
    else:
        say("FAILED: the agent workflows did not end as expected")
    return ok


def _status_in(kube: Kube, plural: str, name: str, namespace: str, phases: set[str]) -> dict[str, Any] | None:
    """The object's status once its phase is one of `phases`."""
    status = (kube.get(API_VERSION, plural, name, namespace) or {}).get("status") or {}
    return status if status.get("phase") in phases else None


def load_manifests_from(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
