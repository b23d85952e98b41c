"""AgentWorkflow admission latency: the operator's webhooks over HTTPS on loopback, 50 concurrent clients, a
5-step workflow; beside the policy engine's own decision time for the same steps.

Three processes, as in production: the emulated API server, the operator (`paybill operator`, its webhook on
HTTPS with a certificate from a CA made for the run, PAYBILL_WEBHOOK_CERT_DIR) and a throwaway PostgreSQL; this
process is the API server's side of the webhook: it sends AdmissionReviews (the agent's ServiceAccount in
userInfo) on 50 keep-alive connections at once and times each answer. The operator's CPU time per review (from
/proc) is the figure that carries over to another machine; a malformed review (no userInfo: answered 400 after
parsing, before any admission work) measures the transport alone (TLS, HTTP, JSON).
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import itertools
import json
import os
import shutil
import ssl
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.database import Placement, TenantDatabases
from paybill.database.agents.install import tenant_schema
from paybill.handlers.admission import CERT_DIR_ENV, HOST_ENV, PORT_ENV, STAMP_ID, VALIDATE_ID, webhook_path
from paybill.policy import PolicyEngine

from . import tenants
from .tenants import API, Stack, _free_port

CLIENTS = 50
# reviews a second from the paced clients: 100 is far above a cluster's AgentWorkflow submissions; the higher ones
# find where p99 passes the goal
RATES = (100.0, 200.0, 400.0, 800.0)
GOAL_MS = 10.0
TENANT, NAMESPACE, AGENT = "bench-acme", "tenant-bench-acme", "tenant-agent"
USER = {
    "username": f"system:serviceaccount:{NAMESPACE}:{AGENT}",
    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
}
STEPS: list[dict[str, Any]] = [
    {"name": "open", "kind": "query", "sql": "SELECT id, status, total FROM orders WHERE status = $1 ORDER BY id"},
    {"name": "paid", "kind": "query", "sql": "SELECT count(*) FROM orders WHERE status = 'paid'"},
    {"name": "who", "kind": "query", "sql": "SELECT id, name, email FROM customers WHERE id = $1"},
    {"name": "refund", "kind": "mutation", "sql": "UPDATE orders SET status = 'refunded' WHERE id = $1"},
    {"name": "mail", "kind": "query", "sql": "SELECT lower(email) FROM customers WHERE name = $1"},
]
PARAMS: list[list[Any]] = [["open"], [], [1], [13], ["Ada"]]
POLICY = {
    "subjects": [{"serviceAccount": AGENT, "agent": "agent:support-bot"}],
    "rules": [
        {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
        {"id": "read-customers", "effect": "allow", "actions": ["select"], "tables": ["customers"],
         "columns": ["id", "name", "email"]},
        {"id": "fix-status", "effect": "allow", "actions": ["update"], "tables": ["orders"], "columns": ["status"],
         "requireWhere": True},
    ],
    "functions": ["lower", "count"],
}  # fmt: skip


def certificates(directory: Path) -> bytes:
    """A CA made for the run and the webhook's certificate for 127.0.0.1 signed by it (tls.crt, tls.key, ca.crt)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paybill-webhook-ca")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    ca_pem = ca.public_bytes(serialization.Encoding.PEM)
    (directory / "ca.crt").write_bytes(ca_pem)
    (directory / "tls.crt").write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_pem = key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption())
    (directory / "tls.key").write_bytes(key_pem)
    return ca_pem


def review(obj: dict[str, Any]) -> dict[str, Any]:
    resource = {"group": "paybill.dev", "version": "v1alpha1", "resource": "agentworkflows"}
    kind = {"group": "paybill.dev", "version": "v1alpha1", "kind": "AgentWorkflow"}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": kind,
            "resource": resource,
            "requestKind": kind,
            "requestResource": resource,
            "name": obj["metadata"]["name"],
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": USER,
            "object": obj,
            "oldObject": None,
            "dryRun": False,
        },
    }


def workflow() -> dict[str, Any]:
    steps = [{**step, "params": params} for step, params in zip(STEPS, PARAMS, strict=True)]
    return {
        "apiVersion": API,
        "kind": "AgentWorkflow",
        "metadata": {"name": "refund-13", "namespace": NAMESPACE, "annotations": {}},
        "spec": {"principal": "agent:support-bot", "policyRef": "support", "steps": steps},
    }


def setup(stack: Stack) -> None:
    kube = stack.kube
    kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "bench-admission"},
            "spec": {
                "tier": "bench",
                "isolation": "pooled",
                "quotas": {"maxAgents": 5, "agentStatementsPerDay": 10**9},
            },
        }
    )
    subscription = {"tenantRef": TENANT, "planRef": "bench-admission", "billingStatus": "active"}
    kube.apply({"apiVersion": API, "kind": "Subscription", "metadata": {"name": TENANT}, "spec": subscription})
    kube.apply(
        {"apiVersion": API, "kind": "Tenant", "metadata": {"name": TENANT}, "spec": {"planRef": "bench-admission"}}
    )
    _wait(lambda: _status(stack, "tenants", TENANT, None).get("phase") == "Active", "the tenant to be Active")
    policy = {"apiVersion": API, "kind": "AgentPolicy", "metadata": {"name": "support", "namespace": NAMESPACE}}
    kube.apply({**policy, "spec": POLICY})
    _wait(lambda: _status(stack, "agentpolicies", "support", NAMESPACE).get("phase") == "Ready", "the policy")


def _status(stack: Stack, plural: str, name: str, namespace: str | None) -> dict[str, Any]:
    return (stack.kube.get(API, plural, name, namespace) or {}).get("status") or {}


def _wait(check: Any, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


async def _post(session: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    async with session.post(url, json=body) as response:
        answer = await response.json() if response.status == 200 else {"status": response.status}
    return time.perf_counter() - started, answer


def _admitted(answer: dict[str, Any]) -> bool:
    return bool(answer.get("response", {}).get("allowed"))


def _malformed_refused(answer: dict[str, Any]) -> bool:
    return answer.get("status") == 400


def _malformed(obj: dict[str, Any]) -> dict[str, Any]:
    """A review without userInfo: the server parses it and answers 400 before any admission work."""
    sent = review(obj)
    del sent["request"]["userInfo"]
    return sent


async def load(
    base: str, trust: ssl.SSLContext, requests: int, rates: tuple[float, ...], operator: int
) -> dict[str, Any]:
    """Stamp once (the mutating webhook), then time each webhook three ways: CLIENTS clients each sending its next
    review as soon as the last was answered (saturation: latency is mostly queueing), CLIENTS clients sending
    `rate` reviews a second between them, spread evenly in time (paced: an open load, as reviews reach a webhook
    from many users), and one client alone (the service time). The validating webhook is paced at every rate of
    `rates`, the others at the first."""
    connector = aiohttp.TCPConnector(limit=CLIENTS, ssl=trust)
    async with aiohttp.ClientSession(connector=connector) as session:
        obj = workflow()
        _, stamped = await _post(session, base + webhook_path(STAMP_ID), review(obj))
        assert stamped["response"]["allowed"], stamped
        for operation in json.loads(base64.b64decode(stamped["response"]["patch"])):
            obj["metadata"]["annotations"][operation["path"].rsplit("/", 1)[1].replace("~1", "/")] = operation["value"]
        results: dict[str, Any] = {}
        for name, handler, make, expected in (
            ("validating", VALIDATE_ID, review, _admitted),
            ("mutating", STAMP_ID, review, _admitted),
            ("transport only (malformed review, 400)", VALIDATE_ID, _malformed, _malformed_refused),
        ):
            url = base + webhook_path(handler)
            latencies: list[float] = []

            async def client(
                count: int, pause: float, offset: float, url: str = url, latencies: list[float] = latencies,
                make: Any = make, expected: Any = expected,
            ) -> None:  # fmt: skip
                """`count` reviews, the k-th sent at offset + k x pause (or at once if the last is still out)."""
                start = time.perf_counter() + offset
                for k in range(count):
                    await asyncio.sleep(max(0.0, start + k * pause - time.perf_counter()))
                    elapsed, answer = await _post(session, url, make(obj))
                    assert expected(answer), answer
                    latencies.append(elapsed)

            await asyncio.gather(*(client(10, 0, 0) for _ in range(CLIENTS)))  # warm: connections, caches
            modes = [(f"{CLIENTS} clients, back to back", CLIENTS, 0.0, requests // CLIENTS)]
            modes += [
                (f"{CLIENTS} clients, {paced:.0f} reviews/s in all", CLIENTS, CLIENTS / paced, requests // CLIENTS // 5)
                for paced in (rates if name == "validating" else rates[:1])
            ]
            modes.append(("1 client", 1, 0.0, requests // 5))
            for mode, clients, pause, count in modes:
                latencies.clear()
                started, cpu = time.perf_counter(), tenants._cpu_seconds(operator)
                # paced clients take turns: client i sends at i/rate, then every CLIENTS/rate seconds
                await asyncio.gather(*(client(count, pause, i * pause / clients) for i in range(clients)))
                wall, cpu = time.perf_counter() - started, tenants._cpu_seconds(operator) - cpu
                results[f"{name}, {mode}"] = {
                    **_percentiles(latencies),
                    "rps": len(latencies) / wall,
                    "n": len(latencies),
                    "cpu": cpu / len(latencies) * 1000,  # the operator's CPU time per review (ms)
                }
    return results


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ordered = sorted(seconds)
    return {
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def engine_times(dsn: str, placement: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    """The engine's own time for the same 5 steps (one workflow's decisions), in this process: warm (the statement
    cache of a running engine, as the webhook uses it) and cold (no cache: parse, analyse, rewrite, validate)."""
    schema = tenant_schema(TenantDatabases(dsn), Placement.from_status(TENANT, placement))
    spec = AgentPolicySpec.model_validate(POLICY)
    results = {}
    for name, engine in (("warm", PolicyEngine(spec, schema)), ("cold", PolicyEngine(spec, schema, cache_size=0))):
        times = []
        for _ in range(rounds):
            started = time.perf_counter()
            for step, params in zip(STEPS, PARAMS, strict=True):
                assert engine.decide("agent:support-bot", step["sql"], params, TENANT).allowed
            times.append(time.perf_counter() - started)
        results[name] = _percentiles(times[rounds // 10 :])
    return results


def measure(quick: bool) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="paybill-bench-admission-"))
    stack = Stack(directory)
    port = _free_port()
    ca = certificates(directory / "webhook")
    saved = {key: os.environ.get(key) for key in (CERT_DIR_ENV, PORT_ENV, HOST_ENV, "PAYBILL_WEBHOOK_ADDR")}
    os.environ.update(
        {
            CERT_DIR_ENV: str(directory / "webhook"),
            PORT_ENV: str(port),
            HOST_ENV: "127.0.0.1",
            "PAYBILL_WEBHOOK_ADDR": "127.0.0.1",
        }
    )
    try:
        stack.start()
        operator = stack.start_operator()
        setup(stack)
        tenants.wait_idle(operator.pid, quiet=2)
        placement = _status(stack, "tenants", TENANT, None)["database"]
        trust = ssl.create_default_context(cadata=ca.decode())
        load_before = os.getloadavg()[0]
        webhook = asyncio.run(load(f"https://127.0.0.1:{port}", trust, 1000 if quick else 5000, RATES, operator.pid))
        load_after = os.getloadavg()[0]
        engine = engine_times(stack.postgres.dsn, placement, 200 if quick else 2000)
        return {"webhook": webhook, "engine": engine, "load": (load_before, load_after)}
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        stack.stop()
        shutil.rmtree(directory, ignore_errors=True)


def run(quick: bool = False) -> str:
    result = measure(quick)
    webhook, engine = result["webhook"], result["engine"]
    before, after = result["load"]
    rows = [
        f"| {name} | {figures['p50']:.2f} | {figures['p99']:.2f} | {figures['cpu']:.2f} | "
        f"{figures['rps']:.0f} reviews/s ({figures['n']:.0f} timed) |"
        for name, figures in webhook.items()
    ] + [
        f"| engine alone, 5 decisions, {name} | {figures['p50']:.3f} | {figures['p99']:.3f} | | in-process |"
        for name, figures in engine.items()
    ]
    return "\n".join(
        [
            "## AgentWorkflow admission webhook",
            "",
            f"`python -m bench --only admission`. A 5-step AgentWorkflow (4 queries, 1 mutation) reviewed by the "
            f"operator's webhooks (`paybill operator` in its own process, its webhook server over HTTPS on "
            f"loopback with a certificate from a CA made for the run: kopf's listener, reviews answered by "
            f"handlers/admission_server.py) as the API server would send it, from "
            f"{CLIENTS} concurrent clients on keep-alive connections, after a warm-up; beside the policy engine "
            f"deciding the same 5 steps in-process. The clients run in the benchmark's process on the same 2 cores "
            f"as the operator, the emulated API server and PostgreSQL. Load average (1 min) when the timed requests "
            f"began and ended: {before:.1f} and {after:.1f}.",
            "",
            "| | p50 (ms) | p99 (ms) | operator CPU per review (ms) | |",
            "| --- | ---: | ---: | ---: | --- |",
            *rows,
            "",
            *verdict(webhook),
        ]
    )


def verdict(webhook: dict[str, Any]) -> list[str]:
    """The goal read off the table: the paced rates whose p99 is under 10 ms, and why saturation is not."""
    paced = [(float(name.split(", ")[2].split()[0]), figures) for name, figures in webhook.items()
             if name.startswith("validating, ") and "reviews/s in all" in name]  # fmt: skip
    met = list(itertools.takewhile(lambda paced_rate: paced_rate[1]["p99"] < GOAL_MS, paced))
    saturated = webhook[f"validating, {CLIENTS} clients, back to back"]
    transport = webhook[f"transport only (malformed review, 400), {CLIENTS} clients, back to back"]["cpu"]
    in_flight = saturated["rps"] * saturated["p50"] / 1000
    measured = ", ".join(f"{rate:.0f}/s {figures['p99']:.1f} ms" for rate, figures in paced)
    return [
        f"Goal p99 < {GOAL_MS:.0f} ms (validating, {CLIENTS} clients): "
        + (f"**met at every paced rate up to {met[-1][0]:.0f} reviews/s**" if met else "**not met at any paced rate**")
        + f" (p99 at each rate: {measured}). "
        f"Not met with the {CLIENTS} clients back to back: that is the webhook saturated, where latency is queueing "
        f"by Little's law (in flight = throughput x latency: {saturated['rps']:.0f} reviews/s x "
        f"{saturated['p50']:.1f} ms p50 = {in_flight:.0f} reviews waiting), so p99 < {GOAL_MS:.0f} ms there needs "
        f"{CLIENTS / GOAL_MS * 1000:.0f} reviews/s, {CLIENTS / GOAL_MS * 1000 / saturated['rps']:.1f} times "
        f"what one event loop answers here at {saturated['cpu']:.2f} ms of CPU per review (the transport alone, "
        f"TLS, HTTP and JSON of a review answered 400 unread: {transport:.2f} ms).",
    ]
