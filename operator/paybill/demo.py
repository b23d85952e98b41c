"""`paybill demo`: the whole stack on one machine (emulated API server + local PostgreSQL + operator)."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import yaml

from .api import API_VERSION
from .api.crdgen import all_crds
from .database.server import LocalPostgres
from .database.tenants import Placement, TenantDatabases
from .handlers.settings import DATABASE_URL_ENV, STATE_DIR_ENV
from .kube import SYSTEM_NAMESPACES, serve, write_kubeconfig
from .kube.client import Kube
from .lifecycle.conditions import is_true
from .policy import PolicyEngine
from .policy.check import load_policy
from .policy.guard import ExecutionGuard
from .policy.install import tenant_schema

REPO = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    return [doc for path in sorted(directory.glob("*.yaml")) for doc in load_manifests_from(path)]


def start_operator(kubeconfig: Path, database_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), DATABASE_URL_ENV: database_url,
           STATE_DIR_ENV: str(log_path.parent)}  # backups in the demo's state directory, 0700
    log = log_path.open("wb")
    return subprocess.Popen([sys.executable, "-m", "paybill", "operator"], env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def wait_for_tenants(kube: Kube, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Poll until every tenant is Ready, printing each phase change as it happens."""
    seen: dict[str, str] = {}
    deadline = time.monotonic() + timeout
    tenants: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        listed = await asyncio.to_thread(kube.list, API_VERSION, "tenants")
        tenants = {t["metadata"]["name"]: t for t in listed if t["metadata"]["name"] in names}
        for name, tenant in sorted(tenants.items()):
            status = tenant.get("status") or {}
            phase = status.get("phase") or "Pending"
            if seen.get(name) != phase:
                ready = next((c for c in status.get("conditions", []) if c["type"] == "Ready"), None)
                detail = f" ({ready['reason']}: {ready['message']})" if ready else ""
                say(f"  tenant {name:<10} {seen.get(name, '-'):>12} -> {phase}{detail}")
                seen[name] = phase
        if len(tenants) == len(names) and all(is_true((t.get("status") or {}).get("conditions", []), "Ready")
                                              for t in tenants.values()):
            break
        await asyncio.sleep(0.3)
    return tenants


def summary(tenants: dict[str, dict[str, Any]]) -> list[str]:
    lines = [f"{'TENANT':<10} {'PHASE':<10} {'READY':<6} {'PLAN':<11} {'ISOLATION':<10} NAMESPACE"]
    for name, tenant in sorted(tenants.items()):
        status = tenant.get("status") or {}
        ready = "True" if is_true(status.get("conditions", []), "Ready") else "False"
        lines.append(f"{name:<10} {status.get('phase', '-'):<10} {ready:<6} {status.get('plan', '-'):<11} "
                     f"{status.get('isolation', '-'):<10} {status.get('namespace', '-')}")
    return lines


async def run_demo(state_dir: Path, samples: Path, keep: bool, port: int | None, timeout: float) -> int:
    state_dir = state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    say("Paybill demo: emulated Kubernetes API + local PostgreSQL + the Paybill operator")
    postgres = LocalPostgres(state_dir / "postgres")
    say("starting a local PostgreSQL server (throwaway, loopback only)")
    database_url = await asyncio.to_thread(postgres.start)
    say(f"  PostgreSQL ready on 127.0.0.1:{postgres.port}")
    try:
        async with serve(port=port) as (api, url):
            api.load(SYSTEM_NAMESPACES)
            kubeconfig = write_kubeconfig(state_dir / "kubeconfig", url)
            say(f"emulated Kubernetes API server on {url} (not a real cluster)")
            kube = Kube(await asyncio.to_thread(_client_for, kubeconfig))
            for crd in all_crds():
                await asyncio.to_thread(kube.apply, crd)
            say(f"  {len(all_crds())} Paybill CRDs registered")
            operator = start_operator(kubeconfig, database_url, state_dir / "operator.log")
            say(f"operator started (pid {operator.pid}, log {state_dir / 'operator.log'})")
            try:
                return await _converge(kube, samples, keep, timeout, kubeconfig, operator, database_url)
            finally:
                await asyncio.to_thread(stop_process, operator)
                api.close_watches()
    finally:
        await asyncio.to_thread(postgres.stop)
        say("stopped: operator, emulated API server, PostgreSQL")


async def _converge(kube: Kube, samples: Path, keep: bool, timeout: float, kubeconfig: Path,
                    operator: subprocess.Popen[bytes], database_url: str) -> int:
    manifests = load_manifests(samples)
    for manifest in manifests:
        result = await asyncio.to_thread(kube.apply, manifest)
        say(f"  {manifest['kind'].lower()}/{manifest['metadata']['name']} {result}")
    names = [m["metadata"]["name"] for m in manifests if m["kind"] == "Tenant"]
    say(f"waiting for {len(names)} tenants to become Ready")
    tenants = await wait_for_tenants(kube, names, timeout)
    print("\n".join(summary(tenants)), flush=True)
    ready = sum(is_true((t.get("status") or {}).get("conditions", []), "Ready") for t in tenants.values())
    if ready != len(names):
        say(f"FAILED: {ready}/{len(names)} tenants Ready after {timeout:.0f}s; see {kubeconfig.parent}/operator.log")
        return 1
    say(f"all {ready} tenants Ready")
    if not await asyncio.to_thread(agent_gate, kube, database_url, samples / "agents", timeout):
        return 1
    if not await asyncio.to_thread(agent_workflows, kube, samples / "agents", timeout):
        return 1
    if not await billing_walk(kube, "acme", timeout):
        return 1
    if keep:
        say(f"stack left running. In another shell:  export KUBECONFIG={kubeconfig}; kubectl get paybill")
        say("press Ctrl-C to stop everything")
        while operator.poll() is None:
            await asyncio.sleep(1)
    return 0


async def billing_walk(kube: Kube, name: str, timeout: float) -> bool:
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
        await asyncio.to_thread(kube.merge_patch, API_VERSION, "subscriptions", name,
                                {"spec": {"billingStatus": billing, "pastDueSince": since}})
        deadline = time.monotonic() + timeout
        status: dict[str, Any] = {}
        while time.monotonic() < deadline:
            status = ((await asyncio.to_thread(kube.get, API_VERSION, "tenants", name)) or {}).get("status") or {}
            if status.get("phase") == phase and status.get("access") == access:
                break
            await asyncio.sleep(0.2)
        else:
            say(f"FAILED: tenant {name} did not reach {phase} with access {access} (is {status.get('phase')}, "
                f"{status.get('access')})")
            return False
        probe = await asyncio.to_thread(_probe_tenant_login, kube, name)
        say(f"  {billing:<9} -> tenant {phase:<9} restriction {status.get('restriction'):<17} {story}; "
            f"as the tenant: {probe}")
    return True


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
        return "login refused (" + (str(error).strip().splitlines() or ["?"])[-1].split(": ")[-1] + ")"


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
            conn.execute("INSERT INTO customers (tenant_id, id, name, email) VALUES (%s, %s, %s, %s) "
                         "ON CONFLICT DO NOTHING", (tenant, first + n, f"{tenant} customer {n + 1}",
                                                    f"c{n + 1}@{tenant}.test"))
            conn.execute("INSERT INTO orders (tenant_id, id, customer_id, status, total) VALUES (%s, %s, %s, %s, %s) "
                         "ON CONFLICT DO NOTHING", (tenant, first + n, first + n, ("open", "paid", "open")[n],
                                                    10 * (n + 1)))


def agent_gate(kube: Kube, database_url: str, directory: Path, timeout: float, tenant: str = "acme") -> bool:
    """Apply the sample AgentPolicy; the operator installs the agent's role; then the agent tries its luck."""
    for name, first in ((tenant, 11), ("globex", 21)):
        _seed(kube, name, first)
    manifest = yaml.safe_load((directory / "support-policy.yaml").read_text())
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    say(f"agent gate: agentpolicy/{name} in {namespace} {kube.apply(manifest)}")
    deadline = time.monotonic() + timeout
    status: dict[str, Any] = {}
    while time.monotonic() < deadline and status.get("phase") != "Ready":
        time.sleep(0.2)
        status = (kube.get(API_VERSION, "agentpolicies", name, namespace) or {}).get("status") or {}
    if status.get("phase") != "Ready":
        say(f"FAILED: agentpolicy/{name} is {status.get('phase') or 'not reconciled'}")
        return False
    say(f"  Ready: {next(c['message'] for c in status['conditions'] if c['type'] == 'Ready')}")
    say(f"  credentials in secret/{status['credentialsSecret']} (never in status, Events or logs)")
    tenant_status = (kube.get(API_VERSION, "tenants", tenant) or {}).get("status") or {}
    placement = tenant_status["database"]
    where = Placement.from_status(tenant, placement)
    engine = PolicyEngine(load_policy(directory / "support-policy.yaml").spec,
                          tenant_schema(TenantDatabases(database_url), where))
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
            shown = ([", ".join(map(str, row)) for row in outcome.rows] if outcome.decision.statement == "select"
                     else f"{outcome.rows_affected} row(s)")
            say(f"  ALLOWED  {statement!r} {params}: {shown}")
            say(f"           ran as: {outcome.decision.sql}")
    say("agent gate: hostile statements denied, legitimate ones ran, only tenant acme's rows seen" if admitted
        else "FAILED: the agent gate did not behave as expected")
    return admitted


def agent_workflows(kube: Kube, directory: Path, timeout: float) -> bool:
    """Submit the sample AgentWorkflows and report what each step did."""
    expected = {"refund-order-13": "Succeeded", "tidy-up": "Denied"}
    workflows = load_manifests_from(directory / "workflows.yaml")
    for manifest in workflows:
        say(f"agent workflow: agentworkflow/{manifest['metadata']['name']} {kube.apply(manifest)}")
    ok = True
    for manifest in workflows:
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        deadline, status = time.monotonic() + timeout, dict[str, Any]()
        while time.monotonic() < deadline and status.get("phase") not in ("Succeeded", "Denied", "Failed"):
            time.sleep(0.2)
            status = (kube.get(API_VERSION, "agentworkflows", name, namespace) or {}).get("status") or {}
        ran = status.get("steps", [])
        steps = ", ".join(f"{s['name']} " + (f"ran ({s['rowsReturned'] or s['rowsAffected']} rows)" if s["executed"]
                                             else f"refused ({s['reasons'][0]['code']})") for s in ran)
        declared = len(manifest["spec"]["steps"])
        say(f"  workflow/{name} {status.get('phase')}: {steps}; {declared - len(ran)} of {declared} steps never ran")
        ok &= status.get("phase") == expected.get(name)
    if ok:
        say("agent workflows: every step checked and recorded in the audit log; rows are in a Secret, not in status")
    else:
        say("FAILED: the agent workflows did not end as expected")
    return ok


def load_manifests_from(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
