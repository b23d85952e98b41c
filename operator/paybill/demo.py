"""`paybill demo`: the whole stack on one machine (emulated API server + local PostgreSQL + operator)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import yaml
from psycopg import conninfo

from .api import API_VERSION
from .api.crdgen import all_crds
from .database.server import LocalPostgres
from .handlers.settings import DATABASE_URL_ENV
from .kube import SYSTEM_NAMESPACES, serve, write_kubeconfig
from .kube.client import Kube
from .lifecycle.conditions import is_true
from .policy import PolicyEngine, Schema
from .policy.check import load_policy
from .policy.grants import agent_role, apply_grants
from .policy.guard import ExecutionGuard

REPO = Path(__file__).resolve().parents[2]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def load_manifests(directory: Path) -> list[dict[str, Any]]:
    documents = []
    for path in sorted(directory.glob("*.yaml")):
        documents += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return documents


def start_operator(kubeconfig: Path, database_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig), DATABASE_URL_ENV: database_url}
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
    if not await asyncio.to_thread(agent_gate, database_url, samples / "agents"):
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
    secret = kube.get("v1", "secrets", "paybill-database", f"tenant-{name}") or {}
    uri = base64.b64decode((secret.get("data") or {}).get("uri", "")).decode()
    try:
        with psycopg.connect(uri, autocommit=True, connect_timeout=3) as conn:
            rows = conn.execute("SELECT count(*) FROM customers").fetchone()[0]
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
    "SELECT name, ssn FROM customers",
    "SELECT pg_read_file('/etc/passwd')",
    "DELETE FROM orders WHERE id = 1",
    "SELECT o.id FROM orders o UNION SELECT id FROM pg_catalog.pg_authid",
)
LEGITIMATE = (
    ("SELECT id, status, total FROM orders WHERE status = $1 ORDER BY id", ["open"]),
    ("UPDATE orders SET status = 'refunded' WHERE id = $1", [11]),
)


def agent_gate(database_url: str, directory: Path, tenant: str = "acme") -> bool:
    """Seed the app's pooled tables, grant the sample AgentPolicy, then let the agent try its luck."""
    say(f"agent gate: AgentPolicy {directory.name}/support-policy.yaml for tenant {tenant} (pooled tables)")
    app_dsn = conninfo.make_conninfo(database_url, dbname="paybill_app")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS paybill_app")
        conn.execute("CREATE DATABASE paybill_app")
    policy_path = directory / "support-policy.yaml"
    policy, policy_name = load_policy(policy_path), yaml.safe_load(policy_path.read_text())["metadata"]["name"]
    with psycopg.connect(app_dsn, autocommit=True) as conn:
        conn.execute((directory / "app-schema.sql").read_text())
        conn.execute("REVOKE ALL ON SCHEMA public FROM PUBLIC")
        for t, name in enumerate(("acme", "globex")):
            for n in range(1, 4):
                key = (t + 1) * 10 + n
                conn.execute("INSERT INTO customers VALUES (%s, %s, %s, %s, %s)",
                             (key, name, f"{name} customer {n}", f"c{n}@{name}.test", f"{key:09d}"))
                conn.execute("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)",
                             (key, name, key, ("open", "paid", "open")[n - 1], 10 * n))
        schema = Schema.from_dsn(app_dsn)
        engine = PolicyEngine(policy.spec, schema)
        role, password = agent_role(policy_name, tenant), secrets.token_urlsafe(24)
        apply_grants(conn, engine.rules, schema, role, tenant, password)
    say(f"  role {role}: column GRANTs and row-level security generated from the same policy")
    agent = policy.spec.subjects[0]
    admitted = True
    with ExecutionGuard(engine, conninfo.make_conninfo(app_dsn, user=role, password=password), agent,
                        tenant) as guard:
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


def _client_for(kubeconfig: Path) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
