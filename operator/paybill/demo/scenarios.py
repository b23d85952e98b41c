"""What the demo shows once the stack runs: the samples applied and the tenants Active, the agent gate (hostile
statements denied, legitimate ones run as the tenant), the agent workflows, and a payment failure walked from
grace to suspension and back. Each step waits through `wait_until`, with the stack's check."""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import yaml

from ..api import API_VERSION
from ..database import Placement, TenantDatabases
from ..database.agents.guard import ExecutionGuard
from ..database.agents.install import tenant_schema
from ..kubeclient import Kube, KubeError
from ..lifecycle.conditions import is_true
from ..policy import PolicyEngine
from ..policy.check import load_policy
from .console import DemoError, say
from .waiting import wait_until

Check = Callable[[], None]  # raises when the stack cannot go on (a child exited)
Status = dict[str, Any]

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


def wait_for_tenants(check: Check, kube: Kube, names: list[str], timeout: float) -> dict[str, dict[str, Any]]:
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

    wait_until(all_ready, timeout, check)
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


def infrastructure_lines(tenants: dict[str, dict[str, Any]], outputs: dict[str, dict[str, str]]) -> list[str]:
    """Each Terraform-provisioned tenant's run: module, plan hash and counts, where the plan is kept, and its
    outputs Secret (the endpoint's value; of the rest only the names, a sensitive one never shown)."""
    lines = []
    for name, tenant in sorted(tenants.items()):
        run = (tenant.get("status") or {}).get("infrastructure") or {}
        if not run.get("appliedHash"):
            continue
        secret = run.get("outputsSecret") or "-"
        values = outputs.get(name, {})
        lines += [
            f"  {name}: terraform {run.get('module')} {run.get('lastRun')} {run.get('lastResult')}, plan "
            f"{run['appliedHash'][:12]}: {run.get('adds', 0)} added, {run.get('changes', 0)} changed, "
            f"{run.get('destroys', 0)} destroyed; plan JSON in {run.get('artifact')}",
            f"  {name}: outputs in secret tenant-{name}/{secret}: endpoint={values.get('endpoint', '-')}, "
            f"{len(values)} outputs ({', '.join(sorted(key for key in values if key != 'endpoint'))})",
        ]
    return lines


# How each cloud without a provider here is exercised (issue 15: only AWS has a real provider on these machines)
BY_CONTRACT = (
    "by contract and adapter fakes (modules parsed against the contract, provider pinned; the adapter's real SDK "
    "client against a loopback fake: tests/clouds)"
)
CONTRACT_CLOUDS = ("azure", "gcp", "oci", "ibm")


def cloud_lines(tenants: dict[str, dict[str, Any]], aws: str) -> list[str]:
    """Which clouds this run built on for real (a sample tenant's applied module, `<cloud>/<model>`), what the AWS
    part did (`aws`: its summary), and how each of the others is exercised."""
    built: dict[str, list[str]] = {}
    for name, tenant in sorted(tenants.items()):
        run = (tenant.get("status") or {}).get("infrastructure") or {}
        if run.get("appliedHash") and "/" in str(run.get("module")):
            built.setdefault(str(run["module"]).split("/", 1)[0], []).append(f"{name} ({run['module']})")
    lines = [f"  {cloud}: built for real by this demo: {', '.join(names)}" for cloud, names in sorted(built.items())]
    return [*lines, f"  aws: {aws}", *(f"  {cloud}: {BY_CONTRACT}" for cloud in CONTRACT_CLOUDS)]


def terraform_outputs(kube: Kube, tenants: dict[str, dict[str, Any]]) -> dict[str, dict[str, str]]:
    """The outputs Secret of each provisioned tenant (read to show names and the endpoint, never printed whole)."""
    found = {}
    for name, tenant in tenants.items():
        run = (tenant.get("status") or {}).get("infrastructure") or {}
        namespace = (tenant.get("status") or {}).get("namespace")
        if run.get("outputsSecret") and namespace:
            found[name] = _secret(kube, run["outputsSecret"], namespace)
    return found


def billing_walk(check: Check, kube: Kube, name: str, timeout: float) -> bool:
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
        status = wait_until(status_when(kube, "tenants", name, None, phase_and_access(phase, access)), timeout, check)
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


def status_when(
    kube: Kube, plural: str, name: str, namespace: str | None, reached: Callable[[Status], bool]
) -> Callable[[], Status | None]:
    """A condition for `wait_until`: the object's status, once `reached(status)` holds."""

    def condition() -> Status | None:
        status = (kube.get(API_VERSION, plural, name, namespace) or {}).get("status") or {}
        return status if reached(status) else None

    return condition


def phase_in(*phases: str) -> Callable[[Status], bool]:
    return lambda status: status.get("phase") in phases


def phase_and_access(phase: str, access: str) -> Callable[[Status], bool]:
    return lambda status: status.get("phase") == phase and status.get("access") == access


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
    check: Check, kube: Kube, database_url: str, directory: Path, timeout: float, tenant: str = "acme"
) -> bool:
    """Apply the sample AgentPolicy; the operator installs the agent's role; then the agent tries its luck."""
    for name, first in ((tenant, 11), ("globex", 21)):
        _seed(kube, name, first)
    manifest = yaml.safe_load((directory / "support-policy.yaml").read_text())
    name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
    say(f"agent gate: agentpolicy/{name} in {namespace} {kube.apply(manifest)}")
    status: dict[str, Any] = (
        wait_until(status_when(kube, "agentpolicies", name, namespace, phase_in("Ready")), timeout, check) or {}
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
    agent = manifest["spec"]["subjects"][0]["agent"]
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


AGENT_ACCOUNT = "tenant-agent"  # the ServiceAccount the sample policy binds agent:support-bot to


def as_service_account(kube: Kube, namespace: str, name: str) -> Kube:
    """A client acting as ServiceAccount namespace/name, with a bound token from the TokenRequest API."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    token = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)["status"][
        "token"
    ]
    configuration = copy.copy(kube.api.configuration)
    configuration.api_key = {"authorization": f"Bearer {token}"}
    configuration.refresh_api_key_hook = None  # else the admin's kubeconfig token is put back before each request
    return Kube(kubernetes.client.ApiClient(configuration))


def agent_workflows(check: Check, kube: Kube, directory: Path, timeout: float) -> bool:
    """Submit the sample AgentWorkflows as the agent's ServiceAccount: the admission webhook refuses one at
    submission with its step's reason; report what each admitted one's steps did."""
    expected = {"refund-order-13": "Succeeded", "tidy-up": "Refused"}
    outcomes: dict[str, str] = {}
    admitted = []
    for manifest in load_manifests_from(directory / "workflows.yaml"):
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        agent = as_service_account(kube, namespace, AGENT_ACCOUNT)
        try:
            agent.create(manifest)
        except KubeError as refused:
            say(f"agent workflow: agentworkflow/{name} refused at submission (HTTP {refused.status}):")
            say(f"  {refused.message}")
            outcomes[name] = "Refused"
            continue
        say(f"agent workflow: agentworkflow/{name} admitted (submitted as serviceaccount {namespace}/{AGENT_ACCOUNT})")
        admitted.append(manifest)
    ended = phase_in("Succeeded", "Denied", "Failed")
    for manifest in admitted:
        name, namespace = manifest["metadata"]["name"], manifest["metadata"]["namespace"]
        status = wait_until(status_when(kube, "agentworkflows", name, namespace, ended), timeout, check) or {}
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
        outcomes[name] = str(status.get("phase"))
    ok = outcomes == expected
    if ok:
        say(
            "agent workflows: every step checked at submission and again when run, recorded in the audit log; rows "
            "are in a Secret, not in status"
        )
    else:
        say("FAILED: the agent workflows did not end as expected")
    return ok


def load_manifests_from(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
