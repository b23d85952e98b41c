"""The operator's metrics at /metrics and its readiness at /readyz, on one small HTTP server of its own.

Names follow controller-runtime's, so dashboards and alerts written for kubebuilder operators read Paybill's:
``controller_runtime_reconcile_total{controller,result}``, ``controller_runtime_reconcile_errors_total``,
``controller_runtime_reconcile_time_seconds``, ``controller_runtime_active_workers``, ``workqueue_depth`` and
``workqueue_adds_total`` (``name`` = the controller), ``leader_election_master_status{name}``; then Paybill's own,
prefixed ``paybill_``. Each is recorded at a thin layer (a handler, the step callback of a workflow run, the
Terraform pool's run wrapper), never inside a decider; what is a state rather than an event (tenants by phase,
the audit chain's length, leadership) is read when scraped.

Readiness (``/readyz``) is separate from kopf's liveness (``/healthz``): ready once the operator has started and
both the API server and the database answer now (each within a few seconds), and, with an election, while this
replica's peering record is live. A standby is ready: it serves the admission webhook and takes over as soon as
the leader's record expires; which one leads is in the answer and in ``leader_election_master_status``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

import prometheus_client
import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from . import peering
from .kubeclient import Kube
from .policy.decision import Decision
from .policy.engine import Gate, PolicyEngine

if TYPE_CHECKING:
    from .workflows.run import StepOutcome

logger = logging.getLogger("paybill.metrics")
prometheus_client.disable_created_metrics()  # no *_created series: controller-runtime has none
REGISTRY = prometheus_client.REGISTRY  # with the process and Python collectors (memory, CPU, open files)
CHECK_TIMEOUT = 3  # seconds each readiness check may take

# controller-runtime's buckets for reconcile time
RECONCILE_BUCKETS = (
    *(0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    *(1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5, 6, 7, 8, 9, 10, 15, 20, 25, 30, 40, 50, 60),
)
GATE_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
TERRAFORM_BUCKETS = (1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600, 900, 1800)

RECONCILE_TOTAL = prometheus_client.Counter(
    "controller_runtime_reconcile_total",
    "Reconciles per controller and result (success, error, requeue_after)",
    ["controller", "result"],
)
RECONCILE_ERRORS = prometheus_client.Counter(
    "controller_runtime_reconcile_errors_total", "Reconciles that ended in an error, per controller", ["controller"]
)
RECONCILE_TIME = prometheus_client.Histogram(
    "controller_runtime_reconcile_time_seconds",
    "Time a reconcile took, per controller",
    ["controller"],
    buckets=RECONCILE_BUCKETS,
)
ACTIVE_WORKERS = prometheus_client.Gauge(
    "controller_runtime_active_workers", "Reconciles running now, per controller", ["controller"]
)
QUEUE_DEPTH = prometheus_client.Gauge(
    "workqueue_depth", "Watch events received and not yet taken by their object's worker", ["name"]
)
QUEUE_ADDS = prometheus_client.Counter("workqueue_adds_total", "Watch events received, per controller", ["name"])

GATE_DECISIONS = prometheus_client.Counter(
    "paybill_gate_decisions_total",
    "Agent gate decisions on workflow steps, by stage (admission: at submission; run: when the step runs), "
    "decision (allow, deny) and first reason code (none without one)",
    ["stage", "decision", "reason"],
)
GATE_LATENCY = prometheus_client.Histogram(
    "paybill_gate_decision_duration_seconds", "Time the policy engine took to decide a statement", buckets=GATE_BUCKETS
)
GUARD_ROWS_READ = prometheus_client.Counter(
    "paybill_guard_rows_read_total", "Rows the execution guard returned to agents' query steps"
)
GUARD_ROWS_WRITTEN = prometheus_client.Counter(
    "paybill_guard_rows_written_total", "Rows agents' mutation steps wrote through the execution guard"
)
TERRAFORM_RUNS = prometheus_client.Counter(
    "paybill_terraform_runs_total",
    "Terraform runs by operation (plan, apply, drift, destroy) and result",
    ["operation", "result"],
)
TERRAFORM_DURATION = prometheus_client.Histogram(
    "paybill_terraform_run_duration_seconds",
    "Time a Terraform run took, by operation",
    ["operation"],
    buckets=TERRAFORM_BUCKETS,
)
READINESS_CHECKS = ("apiServer", "database")
# read when scraped (StateCollector)
LEADER_METRIC, TENANTS_METRIC, AUDIT_METRIC = (
    "leader_election_master_status",
    "paybill_tenants",
    "paybill_audit_chain_length",
)


# -- reconciles -------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def reconciling(controller: str, result_of: Callable[[BaseException], str]) -> Iterator[None]:
    """Time one reconcile of `controller` and count its result: success, or what `result_of` calls the exception
    it raised (`error` counts in the errors too). The exception goes on."""
    ACTIVE_WORKERS.labels(controller).inc()
    started = time.perf_counter()
    result = "success"
    try:
        yield
    except BaseException as exc:
        result = result_of(exc)
        raise
    finally:
        ACTIVE_WORKERS.labels(controller).dec()
        RECONCILE_TIME.labels(controller).observe(time.perf_counter() - started)
        RECONCILE_TOTAL.labels(controller, result).inc()
        if result == "error":
            RECONCILE_ERRORS.labels(controller).inc()


@dataclass
class WorkQueue:
    """Per controller: events its watch delivered and its workers have not taken yet (kopf keeps one queue per
    object; their sum is the depth)."""

    waiting: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def added(self, name: str) -> None:
        QUEUE_ADDS.labels(name).inc()
        self._move(name, +1)

    def taken(self, name: str) -> None:
        self._move(name, -1)

    def _move(self, name: str, by: int) -> None:
        with self.lock:
            self.waiting[name] = max(0, self.waiting.get(name, 0) + by)
            QUEUE_DEPTH.labels(name).set(self.waiting[name])


WORKQUEUE = WorkQueue()


# -- the agent gate and Terraform -------------------------------------------------------------------------------------


_DECIDED: contextvars.ContextVar[list[Decision] | None] = contextvars.ContextVar("paybill_decided", default=None)


class TimedEngine:
    """An engine wrapped: its decisions (same rules, schema, version and decision cache) each timed and kept for
    `counting`. A wrapper, not a subclass: the engine is a compiled class (mypyc), which Python cannot extend."""

    def __init__(self, engine: PolicyEngine) -> None:
        self.engine = engine
        self.rules = engine.rules
        self.schema = engine.schema
        self.version = engine.version

    def decide(
        self,
        principal: str,
        sql: str,
        params: list[Any] | None = None,
        tenant: str | None = None,
        approvals: frozenset[str] = frozenset(),
    ) -> Decision:
        started = time.perf_counter()
        decision = self.engine.decide(principal, sql, params, tenant, approvals)
        GATE_LATENCY.observe(time.perf_counter() - started)
        if (decided := _DECIDED.get()) is not None:
            decided.append(decision)
        return decision


def timed_engine(engine: PolicyEngine) -> Gate:
    return TimedEngine(engine)


@contextlib.contextmanager
def counting(stage: str) -> Iterator[None]:
    """Count the decisions a timed engine makes inside (in this context: this thread or task) as `stage`'s."""
    decided: list[Decision] = []
    token = _DECIDED.set(decided)
    try:
        yield
    finally:
        _DECIDED.reset(token)
        for decision in decided:
            reason = decision.reasons[0].code if decision.reasons else "none"
            GATE_DECISIONS.labels(stage, "allow" if decision.allowed else "deny", reason).inc()


def gate_step(outcome: StepOutcome) -> None:
    """A workflow step run: the gate's decision as status shows it, its first reason (the guard's too), the rows
    it moved (a step done in an interrupted run was not run again: no rows)."""
    decision = "allow" if outcome.decision.allowed or outcome.resumed is not None else "deny"
    GATE_DECISIONS.labels("run", decision, outcome.reasons[0].code if outcome.reasons else "none").inc()
    if outcome.executed and outcome.resumed is None:
        GUARD_ROWS_READ.inc(len(outcome.rows))
        GUARD_ROWS_WRITTEN.inc(outcome.rows_affected)


def terraform_ran(operation: str, result: str, seconds: float) -> None:
    TERRAFORM_RUNS.labels(operation, result).inc()
    TERRAFORM_DURATION.labels(operation).observe(seconds)


# -- states read when scraped -----------------------------------------------------------------------------------------


@dataclass
class Tenants:
    """Each tenant's (phase, plan) as the leader's watch last saw it."""

    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, uid: str, phase: str, plan: str) -> None:
        with self.lock:
            self.seen[uid] = (phase, plan)

    def gone(self, uid: str) -> None:
        with self.lock:
            self.seen.pop(uid, None)

    def counts(self) -> dict[tuple[str, str], int]:
        with self.lock:
            counted: dict[tuple[str, str], int] = {}
            for key in self.seen.values():
                counted[key] = counted.get(key, 0) + 1
            return counted


TENANTS = Tenants()


@dataclass
class Operator:
    """What the scrape-time readings and the readiness checks need, set when the operator starts."""

    kube: Kube
    database_url: str | None
    election: peering.Election | None = None
    started: threading.Event = field(default_factory=threading.Event)
    fence: peering.Fence | None = None  # the handlers' own check: the role they act on is the one reported

    def role(self) -> str:
        """`leader`, `standby`, `unregistered` (no live peering record), or `standalone` (no election)."""
        if self.election is None:
            return "standalone"
        if self.fence is not None:
            return self.fence.role()
        return peering.role(self.kube, self.election, CHECK_TIMEOUT)

    def api_server(self) -> str:
        self.kube.request("GET", "/version", timeout=CHECK_TIMEOUT)
        return "ok"

    def database(self) -> str:
        if not self.database_url:
            raise RuntimeError("not configured")
        with psycopg.connect(self.database_url, connect_timeout=CHECK_TIMEOUT) as conn:
            conn.execute("SELECT 1")
        return "ok"

    def audit_chain_length(self) -> int | None:
        """The audit log's head (records are numbered from 1, one chain per database); None if unreadable."""
        if not self.database_url:
            return None
        try:
            with psycopg.connect(self.database_url, connect_timeout=CHECK_TIMEOUT) as conn:
                if conn.execute("SELECT to_regclass('paybill.audit_log')").fetchone() == (None,):
                    return 0
                row = conn.execute("SELECT seq FROM paybill.audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else 0

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Whether this replica is ready, and each check's answer (no secret in any: errors by type only)."""
        answers: dict[str, Any] = {"started": self.started.is_set()}
        for name, check in (("apiServer", self.api_server), ("database", self.database)):
            answers[name] = _answer(check)
        answers["role"] = _answer(self.role)
        ready = answers["started"] and all(answers[name] == "ok" for name in READINESS_CHECKS)
        return ready and answers["role"] in ("leader", "standby", "standalone"), answers


def _answer(check: Callable[[], str]) -> str:
    try:
        return check()
    except Exception as exc:  # a failed check is an answer, never a crash of the probe
        return f"unavailable: {type(exc).__name__}" + (f" ({exc})" if isinstance(exc, RuntimeError) else "")


class StateCollector(Collector):
    """Gauges read at scrape time: tenants by phase and plan (the leader's, so that a sum over replicas counts each
    tenant once), the audit chain's length, and leadership."""

    def __init__(self) -> None:
        self.operator: Operator | None = None

    def collect(self) -> Iterable[GaugeMetricFamily]:
        operator = self.operator
        if operator is None:
            return
        role = _answer(operator.role)
        if operator.election is not None:
            leading = GaugeMetricFamily(LEADER_METRIC, "1 while this replica leads, else 0", labels=["name"])
            leading.add_metric([operator.election.name], 1.0 if role == "leader" else 0.0)
            yield leading
        tenants = GaugeMetricFamily(
            TENANTS_METRIC, "Tenants by phase and plan, as the leader's watch sees them", labels=["phase", "plan"]
        )
        if role in ("leader", "standalone"):
            for (phase, plan), count in sorted(TENANTS.counts().items()):
                tenants.add_metric([phase, plan], count)
        yield tenants
        length = operator.audit_chain_length()
        if length is not None:
            yield GaugeMetricFamily(AUDIT_METRIC, "Records in the hash-chained audit log", length)


STATE = StateCollector()
REGISTRY.register(STATE)


# -- serving ----------------------------------------------------------------------------------------------------------


class _Endpoints(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, prometheus_client.CONTENT_TYPE_LATEST, prometheus_client.generate_latest(REGISTRY))
        elif path == "/readyz":
            ready, answers = STATE.operator.readiness() if STATE.operator else (False, {"started": False})
            self._reply(200 if ready else 503, "application/json", json.dumps(answers).encode())
        else:
            self._reply(404, "text/plain", b"not found\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (``:8081`` is every address, as controller-runtime reads it); ValueError otherwise."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "0.0.0.0", int(port)


def serve(address: tuple[str, int]) -> ThreadingHTTPServer:
    """/metrics and /readyz at `address` (port 0: a free one, see ``server_address``), in a daemon thread."""
    server = ThreadingHTTPServer(address, _Endpoints)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="paybill-metrics", daemon=True).start()
    return server
