"""AgentWorkflow admission webhooks, served by the operator, failurePolicy Fail.

kopf registers them (the decorated handlers below declare them) and listens (its webhook server); the reviews are
answered by `answers`, without kopf's per-review machinery (admission_server.py: 2.5 ms of CPU per review, of which
the decision was 0.2 ms).

The API server calls the mutating webhook (stamps the requester, the policy version and each step's plan hash)
and then the validating one (admits or refuses with every reason; checks the stamp is the one it computes) before
it stores a workflow; both are persistent, so with the operator stopped the API server cannot reach them and
admits nothing. What to answer is decided in workflows/admission.py; these handlers read the request and the
operator's in-memory indexes (no API call on the request path), build the policy's engine once per policy version
(its schema is read from the tenant's database) and answer. The stamp is signed (HMAC, the operator's key ring) and
an admitted create's statements are charged to its tenant's UTC day in the control database (handlers/stamping.py):
the one database write on the request path, in the validating webhook, last.

Where it listens (the only place these are set; the chart and the docs take them from here):
- without PAYBILL_WEBHOOK_CERT_DIR: plain HTTP on 127.0.0.1 (loopback only: the emulated API server), on
  PAYBILL_WEBHOOK_PORT or a free port, and the operator registers both configurations (named CONFIGURATION);
- with PAYBILL_WEBHOOK_CERT_DIR (tls.crt, tls.key, ca.crt, e.g. a Secret the chart makes from a generated CA):
  HTTPS on PAYBILL_WEBHOOK_ADDR (default 0.0.0.0) port PAYBILL_WEBHOOK_PORT (default 9443); the chart registers
  the configurations (a Service to that port, paths below, caBundle ca.crt), unless PAYBILL_WEBHOOK_HOST is set:
  then the operator registers https://HOST:PORT with caBundle ca.crt.
- with PAYBILL_WEBHOOK_CLIENT_CA (a PEM CA bundle; HTTPS only): only a caller with a client certificate signed by
  that CA completes the TLS handshake (kube-apiserver presents one when its AdmissionConfiguration gives the webhook
  a kubeConfigFile with client-certificate/client-key), and with PAYBILL_WEBHOOK_CLIENT_NAMES (a comma list) only
  one whose subject CN is named is answered: a review POSTed by anyone else, which could name any approver in its
  userInfo, is never read.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import os
import ssl
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import kopf
import pydantic

from .. import metrics
from ..api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from ..api.agentworkflow import AgentWorkflowSpec
from ..api.meta import API_VERSION, GROUP, VERSION
from ..api.plan import PlanSpec
from ..api.tenant import Access, DatabasePlacement, TenantSpec, TenantStatus
from ..database import DatabaseUnavailable, Placement, TenantDatabases
from ..database.agents.install import engine_for
from ..errors import first_line
from ..kubeclient import Kube
from ..lifecycle.evidence import agent_placement_problem
from ..lifecycle.tenant import TENANT_LABEL
from ..metrics import counting, timed_engine
from ..policy import Gate
from ..policy.rules import PolicyError
from ..policy.schema import SchemaError
from ..workflows import approvals
from ..workflows.admission import (
    REQUESTER,
    Request,
    Tenancy,
    Verdict,
    World,
    admit,
    agents_named,
    refuse,
    stamp_matches,
)
from ..workflows.reconcile import PolicyView, tenant_suspended
from ..workflows.stamp import ADMISSION_ID, new_admission_id
from .admission_server import (
    Answer,
    RequestPayload,
    Resource,
    ResponsePayload,
    ReviewServer,
    allowed,
    annotations_patch,
    patched,
    refused,
)
from .agentpolicy import records_of
from .agentworkflow import review_approvals
from .instrument import INDEX_STREAMS
from .stamping import charged, signed
from .suspension import subscriptions_of

# -- the webhooks' names, paths and port: the one place they are declared ------------------------------------------
CONFIGURATION = "admission.paybill.dev"  # ValidatingWebhookConfiguration and MutatingWebhookConfiguration
VALIDATE_ID = "validate-agentworkflow"  # webhook validate-agentworkflow.admission.paybill.dev
STAMP_ID = "stamp-agentworkflow"  # webhook stamp-agentworkflow.admission.paybill.dev
PATH = "/admission"  # each webhook at PATH/<id>: /admission/validate-agentworkflow, /admission/stamp-agentworkflow
TLS_PORT = 9443
CERT_DIR_ENV = "PAYBILL_WEBHOOK_CERT_DIR"
ADDR_ENV = "PAYBILL_WEBHOOK_ADDR"
PORT_ENV = "PAYBILL_WEBHOOK_PORT"
HOST_ENV = "PAYBILL_WEBHOOK_HOST"
CLIENT_CA_ENV = "PAYBILL_WEBHOOK_CLIENT_CA"
CLIENT_NAMES_ENV = "PAYBILL_WEBHOOK_CLIENT_NAMES"
LOOPBACK = "127.0.0.1"
WORKFLOWS = Resource(GROUP, VERSION, "agentworkflows")
Operation = Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
STAMP_OPERATIONS: tuple[Operation, ...] = ("CREATE",)
VALIDATE_OPERATIONS: tuple[Operation, ...] = ("CREATE", "UPDATE")


def webhook_name(handler_id: str) -> str:
    return f"{handler_id}.{CONFIGURATION}"


def webhook_path(handler_id: str) -> str:
    return f"{PATH}/{handler_id}"


@dataclass(frozen=True)
class Listening:
    """How the webhook server listens and who registers it."""

    addr: str
    port: int | None  # None: a free port
    cert_dir: Path | None  # None: plain HTTP (loopback only)
    host: str | None  # the host in the registered URL
    managed: bool  # the operator registers the configurations
    client_ca: Path | None = None  # callers must present a client certificate signed by this CA bundle
    client_names: tuple[str, ...] = ()  # and, if any, have one of these subject CNs


def listening(environ: Mapping[str, str]) -> Listening:
    """Read the webhook settings; plain HTTP anywhere but loopback is refused, and a client CA without HTTPS."""
    cert_dir = Path(environ[CERT_DIR_ENV]) if environ.get(CERT_DIR_ENV) else None
    port = int(environ[PORT_ENV]) if environ.get(PORT_ENV) else (TLS_PORT if cert_dir else None)
    host = environ.get(HOST_ENV) or None
    client_ca = Path(environ[CLIENT_CA_ENV]) if environ.get(CLIENT_CA_ENV) else None
    names = tuple(name.strip() for name in (environ.get(CLIENT_NAMES_ENV) or "").split(",") if name.strip())
    if cert_dir is None:
        if client_ca is not None or names:
            raise ValueError(f"{CLIENT_CA_ENV} needs HTTPS (client certificates are a TLS feature); set {CERT_DIR_ENV}")
        addr = environ.get(ADDR_ENV) or LOOPBACK
        if not ipaddress.ip_address(addr).is_loopback:
            raise ValueError(f"{ADDR_ENV}={addr}: plain HTTP is served on loopback only; set {CERT_DIR_ENV}")
        return Listening(addr, port, None, host or addr, managed=True)
    if names and client_ca is None:
        raise ValueError(f"{CLIENT_NAMES_ENV} names client certificates: set {CLIENT_CA_ENV} too")
    addr = environ.get(ADDR_ENV) or "0.0.0.0"
    return Listening(addr, port, cert_dir, host, managed=host is not None, client_ca=client_ca, client_names=names)


def server_context(where: Listening) -> ssl.SSLContext:
    """The HTTPS server's TLS context: no CA trusted for callers unless a client CA is set, and then that CA alone,
    a client certificate required (create_default_context would add the system's public CAs to verify them)."""
    assert where.cert_dir is not None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(where.cert_dir / "tls.crt", where.cert_dir / "tls.key")
    if where.client_ca is not None:
        context.load_verify_locations(cafile=where.client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def webhook_server(where: Listening, answers: Mapping[str, Answer]) -> ReviewServer:
    """kopf's server (listening, TLS, the URL kopf registers) answering our webhooks itself (admission_server.py)."""
    if where.cert_dir is None:
        return ReviewServer(
            resource=WORKFLOWS, answers=answers, addr=where.addr, port=where.port, path=PATH, host=where.host,
            insecure=True,
        )  # fmt: skip
    return ReviewServer(
        resource=WORKFLOWS,
        answers=answers,
        client_names=where.client_names,
        addr=where.addr,
        port=where.port,
        path=PATH,
        host=where.host,
        context=server_context(where),
        cafile=where.cert_dir / "ca.crt",
        certfile=where.cert_dir / "tls.crt",  # watched: a renewed certificate restarts the server
        pkeyfile=where.cert_dir / "tls.key",
    )


class AdmissionLog(logging.Filter):
    """One line per refusal, none per admitted review. The server logs a refusal as INFO with its reasons
    (admission_server.py); should kopf answer one, it logs it as an ERROR ("failed permanently"): a refusal is the
    webhook's answer, not a fault of the operator, so it is INFO too. kopf's "succeeded" line and aiohttp's access
    line for every admitted review are dropped: at the request rate of a webhook they were a fifth of its time, and
    the API server keeps its own audit of writes."""

    HANDLERS = tuple(f"Webhook {handler_id!r}" for handler_id in (STAMP_ID, VALIDATE_ID))

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.msg if isinstance(record.msg, str) else ""
        if record.name == "aiohttp.access":
            return f'"POST {PATH}/' not in message
        if not message.startswith(self.HANDLERS):
            return True
        if record.levelno == logging.ERROR and "failed permanently" in message:
            record.levelno, record.levelname = logging.INFO, "INFO"
        return not message.endswith(" succeeded.")


@kopf.on.startup()
def configure_admission(settings: kopf.OperatorSettings, memo: kopf.Memo, **kwargs: Any) -> None:
    where = listening(os.environ)
    settings.admission.server = webhook_server(where, answers(memo, {name: kwargs[name] for name in INDEXES}))
    settings.admission.managed = CONFIGURATION if where.managed else None
    memo.admission_engines = EngineCache()
    for name in ("kopf.objects", "aiohttp.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, AdmissionLog) for f in logger.filters):
            logger.addFilter(AdmissionLog())


# -- the operator's view of the world, kept by kopf's indexes (watch-fed, in memory) --------------------------------


@dataclass(frozen=True)
class TenantEntry:
    uid: str
    spec: TenantSpec
    status: TenantStatus
    placement: str | None  # status.database as JSON: part of the engine's cache key, serialised once per change


@dataclass(frozen=True)
class PolicyEntry:
    name: str
    uid: str
    generation: int
    view: PolicyView


def namespace_entry(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Namespace -> (the Tenant its label names, the uids of its controllers)."""
    meta = obj["metadata"]
    controllers = frozenset(str(ref.get("uid")) for ref in meta.get("ownerReferences") or [] if ref.get("controller"))
    return {meta["name"]: ((meta.get("labels") or {}).get(TENANT_LABEL), controllers)}


def tenant_entry(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    try:
        seen = TenantStatus.model_validate(dict(obj.get("status") or {}))
        spec = TenantSpec.model_validate(dict(obj.get("spec") or {}))
    except pydantic.ValidationError:
        return None  # the CRD schema refuses such objects; never trusted if one gets through
    placement = seen.database.model_dump_json() if seen.database is not None else None
    return {meta["name"]: TenantEntry(str(meta.get("uid")), spec, seen, placement)}


def plan_entry(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return {obj["metadata"]["name"]: PlanSpec.model_validate(dict(obj.get("spec") or {}))}
    except pydantic.ValidationError:
        return None


def policy_entry(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    meta = obj["metadata"]
    try:
        spec = AgentPolicySpec.model_validate(dict(obj.get("spec") or {}))
        view = PolicyView(spec, AgentPolicyStatus.model_validate(dict(obj.get("status") or {})))
    except pydantic.ValidationError:
        return None
    entry = PolicyEntry(meta["name"], str(meta.get("uid")), int(meta.get("generation") or 0), view)
    return {str(meta.get("namespace")): entry}


@kopf.index("namespaces")
def admission_namespaces(body: kopf.Body, **_: Any) -> dict[str, Any]:
    return namespace_entry(body)


@kopf.index(GROUP, VERSION, "tenants")
def admission_tenants(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
    return tenant_entry(body)


@kopf.index(GROUP, VERSION, "plans")
def admission_plans(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
    return plan_entry(body)


@kopf.index(GROUP, VERSION, "agentpolicies")
def admission_policies(body: kopf.Body, **_: Any) -> dict[str, Any] | None:
    return policy_entry(body)


def _one(index: kopf.Index[Any, Any], key: Any) -> Any:
    store = index.get(key)
    return next(iter(store), None) if store is not None else None


def tenant_of_namespace(
    namespace: str, namespaces: kopf.Index[Any, Any], tenants: kopf.Index[Any, Any]
) -> TenantEntry | None:
    """The Tenant whose namespace this is: the label only says which Tenant to ask; the Tenant must control the
    namespace by uid."""
    found = _one(namespaces, namespace)
    if found is None or not found[0]:
        return None
    tenant: TenantEntry | None = _one(tenants, found[0])
    return tenant if tenant is not None and tenant.uid in found[1] else None


def observe(
    namespace: str, spec: AgentWorkflowSpec, indices: Mapping[str, kopf.Index[Any, Any]]
) -> tuple[World, TenantEntry | None, PolicyEntry | None]:
    tenant_name = ""
    entry = tenant_of_namespace(namespace, indices["admission_namespaces"], indices["admission_tenants"])
    tenancy = None
    if entry is not None:
        tenant_name = _tenant_name(namespace, indices["admission_namespaces"])
        plan = _one(indices["admission_plans"], entry.spec.planRef)
        subscriptions = indices.get("subscriptions_by_tenant")
        billed = list(subscriptions.get(tenant_name) or []) if subscriptions is not None else []
        tenancy = Tenancy(
            tenant_name,
            tenant_suspended(entry.spec, plan, billed, datetime.datetime.now(datetime.UTC)),
            Access(entry.status.access or Access.NONE),
            entry.spec.planRef,
            plan,
            entry.status.phase,
        )
    policies: list[PolicyEntry] = list(indices["admission_policies"].get(namespace) or [])
    policy = next((p for p in policies if p.name == spec.policyRef), None)
    world = World(
        tenancy,
        policy.view if policy is not None else None,
        agents_named([p.view.spec for p in policies]),
        policy.generation if policy is not None else None,
    )
    return world, entry, policy


def _tenant_name(namespace: str, namespaces: kopf.Index[Any, Any]) -> str:
    return str(_one(namespaces, namespace)[0])


# -- a standby replica's view: kopf pauses its watches (and so its indexes), so it reads the API server instead ------


def indexed(entries: Mapping[str, Any] | None) -> dict[str, list[Any]]:
    """An index function's answer for one object, shaped as kopf's index ({key: [value]})."""
    return {key: [value] for key, value in (entries or {}).items()}


def read_world(kube: Kube, namespace: str) -> dict[str, dict[str, list[Any]]]:
    """The indexes' content for one namespace, read from the API server through the same entry functions (a
    replica whose watches kopf paused, a standby under leader election, would otherwise answer from stale ones)."""
    views: dict[str, dict[str, list[Any]]] = {name: {} for name in INDEXES}
    found = kube.get("v1", "namespaces", namespace)
    if found is None:
        return views
    views["admission_namespaces"] = indexed(namespace_entry(found))
    tenant_name = (found["metadata"].get("labels") or {}).get(TENANT_LABEL)
    tenant = kube.get(API_VERSION, "tenants", tenant_name) if tenant_name else None
    if tenant is not None:
        views["admission_tenants"] = indexed(tenant_entry(tenant))
        plan_name = (tenant.get("spec") or {}).get("planRef")
        plan = kube.get(API_VERSION, "plans", plan_name) if plan_name else None
        views["admission_plans"] = indexed(plan_entry(plan)) if plan is not None else {}
        views["subscriptions_by_tenant"] = {str(tenant_name): subscriptions_of(kube, str(tenant_name))}
    policies = [policy_entry(item) for item in kube.list(API_VERSION, "agentpolicies", namespace)]
    views["admission_policies"] = {namespace: [value for item in policies if item for value in item.values()]}
    return views


INDEXES = (
    "admission_namespaces",
    "admission_tenants",
    "admission_plans",
    "admission_policies",
    "subscriptions_by_tenant",  # handlers/tenant.py's
)
INDEX_RESOURCES = ("namespaces", "tenants", "plans", "agentpolicies", "subscriptions")  # what INDEXES are kept from


class Leadership:
    """Whether kopf's indexes may answer: standalone, or leading the election now (peering.Fence, read fresh), with
    every indexed resource listed again since kopf last resumed and no event of it waiting for its worker
    (instrument.IndexStreams). A replica that just took over answers from the API server until then."""

    async def live(self) -> bool:
        operator = metrics.STATE.operator
        if operator is None or operator.election is None:
            return True
        if not INDEX_STREAMS.fresh(INDEX_RESOURCES):
            return False
        role = operator.fence.cached() if operator.fence is not None else None
        if role is None:
            try:
                role = await asyncio.to_thread(operator.role)
            except Exception:  # an unknown role is not leading: read the API server
                return False
        return role == "leader"


LEADERSHIP = Leadership()


async def reviewed(
    operation: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    indices: Mapping[str, Any],
    admission_id: str,
) -> Verdict:
    """`review` on kopf's indexes while this replica's watches run, else on what the API server says now. The
    indexes follow the watch a moment behind the API server (a policy whose Ready status was just written may still
    read Pending there): a refusal is decided again on what the API server says now, so only admissions are fast."""
    namespace = _namespace(body)
    live = await LEADERSHIP.live()
    indexes: Mapping[str, Any] = (
        {name: indices[name] for name in INDEXES} if live else await asyncio.to_thread(read_world, memo.kube, namespace)
    )
    verdict = await review(operation, body, old, userinfo, memo, indexes, admission_id)
    if verdict.allowed or not live:
        return verdict
    fresh: Mapping[str, Any] = await asyncio.to_thread(read_world, memo.kube, namespace)
    try:
        spec = AgentWorkflowSpec.model_validate(dict(body.get("spec") or {}))
    except pydantic.ValidationError:
        return verdict  # refused for its spec, whatever the world
    if observe(namespace, spec, indexes)[0] == observe(namespace, spec, fresh)[0]:
        return verdict  # the same world: decided once (and counted once)
    return await review(operation, body, old, userinfo, memo, fresh, admission_id)


# -- the policy's engine, built once per (policy generation and version, tenant access, placement) ------------------


@dataclass(frozen=True)
class EngineKey:
    tenant: str
    tenant_uid: str
    policy_uid: str
    generation: int
    version: str | None
    access: Access
    placement: str  # DatabasePlacement as JSON (hashable)


class EngineCache:
    """Engines by what they depend on; a miss reads the tenant's live schema (in a thread, off the event loop)."""

    def __init__(self, size: int = 256) -> None:
        self._engines: dict[EngineKey, Gate] = {}
        self._lock = threading.Lock()
        self._size = size

    async def get(
        self, databases: TenantDatabases | None, key: EngineKey, spec: AgentPolicySpec
    ) -> tuple[Gate | None, str | None]:
        engine = self._engines.get(key)
        if engine is not None:
            return engine, None
        if databases is None:
            return None, "the operator has no tenant database configured"
        try:
            engine = await asyncio.to_thread(_build_engine, databases, key, spec)
        except (PolicyError, SchemaError, DatabaseUnavailable, EngineRefused) as exc:
            return None, first_line(exc)
        with self._lock:
            if len(self._engines) >= self._size:
                self._engines.pop(next(iter(self._engines)))
            self._engines[key] = engine
        return engine, None


class EngineRefused(Exception):
    """The operator's own records do not put the tenant's data where its status says."""


def _build_engine(databases: TenantDatabases, key: EngineKey, spec: AgentPolicySpec) -> Gate:
    records = records_of(databases, {"metadata": {"name": key.tenant}})
    placement = DatabasePlacement.model_validate_json(key.placement)
    if problem := agent_placement_problem(key.tenant, key.tenant_uid, placement, records):
        raise EngineRefused(problem)
    return timed_engine(engine_for(databases, Placement.from_status(key.tenant, placement), spec, key.access))


async def engine_of(
    memo: kopf.Memo, tenant: TenantEntry | None, policy: PolicyEntry | None, name: str
) -> tuple[Gate | None, str | None]:
    if tenant is None or policy is None:
        return None, None  # admission refuses before it needs one
    placement = tenant.placement
    if placement is None:
        return None, f"tenant {name}'s database is not ready"
    access = min(
        (Access(tenant.status.access or Access.NONE), Access(policy.view.status.access or Access.NONE)),
        key=(Access.NONE, Access.READ_ONLY, Access.FULL).index,
    )
    version = policy.view.status.policyVersion
    key = EngineKey(name, tenant.uid, policy.uid, policy.generation, version, access, placement)
    cache: EngineCache = memo.admission_engines
    return await cache.get(memo.databases, key, policy.view.spec)


# -- the webhooks ----------------------------------------------------------------------------------------------------


def _metadata(body: Mapping[str, Any]) -> Mapping[str, Any]:
    return body.get("metadata") or {}


def _annotations(body: Mapping[str, Any]) -> dict[str, str]:
    return dict(_metadata(body).get("annotations") or {})


def _namespace(body: Mapping[str, Any]) -> str:
    return str(_metadata(body).get("namespace"))


async def review(
    operation: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    indices: Mapping[str, kopf.Index[Any, Any]],
    admission_id: str,
) -> Verdict:
    """Read the request (the objects as the API server sent them) and the world, build the engine, ask `admit`;
    an admitted create's stamp is signed with `admission_id`."""
    namespace = _namespace(body)
    try:
        spec = AgentWorkflowSpec.model_validate(dict(body.get("spec") or {}))
        old_spec = AgentWorkflowSpec.model_validate(dict(old.get("spec") or {})) if old is not None else None
    except pydantic.ValidationError as exc:
        return refuse(f"spec is invalid: {first_line(exc)}")
    request = Request(
        str(operation),
        namespace,
        str(userinfo.get("username") or ""),
        spec,
        _annotations(body),
        old_spec,
        _annotations(old) if old is not None else {},
    )
    engine, problem = None, None
    world, tenant, policy = observe(namespace, spec, indices)
    if request.operation == "CREATE" and world.tenancy is not None:
        engine, problem = await engine_of(memo, tenant, policy, world.tenancy.tenant)
    verdict = admit(request, world, engine, problem)
    return await signed(verdict, body, spec, memo, admission_id)  # stamp.py: signed, verified


async def stamp_verdict(
    operation: str | None,
    body: Mapping[str, Any],
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    indices: Mapping[str, Any],
) -> Verdict:
    """The mutating webhook: a created workflow admitted with the stamp to write, or refused with every reason."""
    with counting("admission"):  # each submission once: this webhook is asked first (validation decides again)
        return await reviewed(operation, body, None, userinfo, memo, indices, new_admission_id())


async def validation_problem(
    operation: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    indices: Mapping[str, Any],
    dryrun: bool,
) -> str | None:
    """The validating webhook: why this create or update is refused, or None."""
    admission_id = _annotations(body).get(ADMISSION_ID, "")  # the mutating webhook's: the stamp must match it
    verdict = await reviewed(operation, body, old, userinfo, memo, indices, admission_id)
    if not verdict.allowed:
        return verdict.message
    if operation == "CREATE" and not stamp_matches(_annotations(body), verdict):
        return "the admission stamp is missing or altered (the mutating webhook writes it)"
    # approvals: who writes paybill.dev/approve-*/reject-* (workflows/approvals.py); recorded last, once admitted
    submitter = _annotations(old or body).get(REQUESTER)
    refused = await _approvals_problem(operation, body, old, userinfo, memo, dryrun, submitter)
    if refused is not None:
        return refused
    return await charged(verdict, memo, dryrun, datetime.datetime.now(datetime.UTC))  # last, so counted once


async def _approvals_problem(
    operation: str | None,
    body: Mapping[str, Any],
    old: Mapping[str, Any] | None,
    userinfo: Mapping[str, Any],
    memo: kopf.Memo,
    dryrun: bool,
    submitter: str | None,
) -> str | None:
    """review_approvals, asked only when the write adds, changes or removes an approve-/reject- annotation (its
    first check, made here on the raw annotations: wrapping both bodies for it was a tenth of a review's CPU)."""
    if not approvals.changes(_annotations(old) if old is not None else {}, _annotations(body)):
        return None
    return await review_approvals(
        operation, _body(body), _body(old) if old is not None else None, userinfo, memo, dryrun, submitter
    )


def _body(raw: Mapping[str, Any]) -> kopf.Body:
    return raw if isinstance(raw, kopf.Body) else kopf.Body(raw)  # type: ignore[arg-type]


def answers(memo: kopf.Memo, indices: Mapping[str, Any]) -> dict[str, Answer]:
    """The webhooks as ReviewServer answers them (admission_server.py): the same verdicts as the kopf handlers
    below, from the AdmissionReview's request as sent, without kopf's per-review machinery."""

    async def stamp(request: RequestPayload) -> ResponsePayload:
        if request.get("operation") not in STAMP_OPERATIONS or request.get("subResource"):
            return allowed()  # no handler for it: what kopf answers
        body = request["object"]
        verdict = await stamp_verdict(request.get("operation"), body, request["userInfo"], memo, indices)
        if not verdict.allowed:
            return refused(verdict.message)
        return patched(annotations_patch(_metadata(body).get("annotations"), verdict.stamp))

    async def validate(request: RequestPayload) -> ResponsePayload:
        operation = request.get("operation")
        if operation not in VALIDATE_OPERATIONS or request.get("subResource"):
            return allowed()
        old = request.get("oldObject") if operation == "UPDATE" else None
        problem = await validation_problem(
            operation, request["object"], old, request["userInfo"], memo, indices, bool(request.get("dryRun"))
        )
        return allowed() if problem is None else refused(problem)

    return {STAMP_ID: stamp, VALIDATE_ID: validate}


# kopf's handlers: they declare the webhooks kopf registers (rules, operations, failurePolicy Fail); ReviewServer
# answers their reviews through `answers`, and kopf through these should it ever be asked.


@kopf.on.mutate(GROUP, VERSION, "agentworkflows", id=STAMP_ID, operations=list(STAMP_OPERATIONS), persistent=True)
async def stamp_workflow(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    patch: kopf.Patch,
    memo: kopf.Memo,
    operation: str | None = None,
    **kwargs: Any,
) -> None:
    verdict = await stamp_verdict(operation, body, userinfo, memo, kwargs)
    if not verdict.allowed:
        raise kopf.AdmissionError(verdict.message, code=403)
    patch.metadata.annotations.update(verdict.stamp)


@kopf.on.validate(  # side effects (approvals recorded, statements charged), never for a dry run: NoneOnDryRun
    GROUP,
    VERSION,
    "agentworkflows",
    id=VALIDATE_ID,
    operations=list(VALIDATE_OPERATIONS),
    persistent=True,
    side_effects=True,
)
async def validate_workflow(
    body: kopf.Body,
    userinfo: kopf.UserInfo,
    memo: kopf.Memo,
    operation: str | None = None,
    old: kopf.Body | None = None,
    **kwargs: Any,
) -> None:
    problem = await validation_problem(operation, body, old, userinfo, memo, kwargs, bool(kwargs.get("dryrun")))
    if problem is not None:
        raise kopf.AdmissionError(problem, code=403)
