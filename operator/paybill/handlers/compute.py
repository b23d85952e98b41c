"""A tenant's instances stopped and started through its plan's cloud adapter (the PowerCompute action
clouds/compute.py decides), and the adapter a Plan's provisioning points at: its credentials Secret, and the
loopback endpoint PAYBILL_CLOUD_ENDPOINTS may name for it (tests and fakes).

While a tenant stays Suspended a periodic check (every PAYBILL_COMPUTE_CHECK_SECONDS, 60) looks at the adapter's
inventory and stops again what runs (an instance started by hand): the reconcile alone never would, status.compute
already says stopped. The check and the reconcile's power actions hold one lock per tenant, and the check reads the
tenant afresh under it, so a resume recorded meanwhile is never undone."""

from __future__ import annotations

import base64
import os
import threading
import time
from typing import Any

import kopf

from ..api.meta import API_VERSION, GROUP, VERSION, now_rfc3339
from ..api.plan import PlanSpec, Provisioning
from ..api.tenant import ComputeStatus, TenantPhase
from ..clouds import Cloud, CloudAdapter, CloudError
from ..clouds import preflight as cloud_preflight
from ..clouds.compute import DONE, FAILED, STOPPED, strays
from ..clouds.retry import redact
from ..errors import first_line
from ..kubeclient import Kube
from . import events
from .apply import operator_namespace, touch
from .instrument import leading_now


class ComputeFailed(Exception):
    """The adapter could not stop or start the instances: the cloud's code and message, no credential."""


def provider_credentials(kube: Kube, secret: str | None) -> dict[str, str]:
    """The Plan's credentials Secret's values (for the adapter only: never in status, Events or logs)."""
    namespace = operator_namespace()
    if secret is None or namespace is None:
        return {}
    found = kube.get("v1", "secrets", secret, namespace) or {}
    return {key: base64.b64decode(value).decode() for key, value in (found.get("data") or {}).items()}


def cloud_adapter(kube: Kube, provisioning: Provisioning) -> tuple[CloudAdapter, dict[str, str]]:
    """The adapter of the provisioning's cloud, account and region, and the credential values (to redact).
    ValueError: PAYBILL_CLOUD_ENDPOINTS names a non-loopback address; ImportError: the cloud's SDK is missing."""
    from ..clouds.adapters import adapter  # the SDKs are the `clouds` extra, imported only when a cloud is used

    cloud = Cloud(str(provisioning.cloud))
    endpoint = cloud_preflight.endpoints(os.environ.get(cloud_preflight.ENDPOINTS_ENV)).get(cloud)
    credentials = provider_credentials(kube, provisioning.credentialsSecret)
    return adapter(cloud, credentials, provisioning.target_region, endpoint=endpoint), credentials


# What an adapter call may fail with: the cloud's answer, or the adapter not being buildable or answering in time
ADAPTER_FAILURES = (CloudError, TimeoutError, ValueError, ImportError)


def failure_message(exc: Exception) -> str:
    """An adapter failure as status and Events say it (the cloud's code and HTTP status); redact credentials."""
    if isinstance(exc, CloudError):
        status = f" (HTTP {exc.status})" if exc.status else ""
        return f"{exc.cloud} answered {exc.code}{status}: {exc.message}"
    return f"{type(exc).__name__}: {first_line(exc)}"


COMPUTE_CHECK_ENV = "PAYBILL_COMPUTE_CHECK_SECONDS"
DEFAULT_COMPUTE_CHECK_SECONDS = 60.0
COMPUTE_TICK = 5.0  # seconds: how often a suspended tenant looks whether its compute check is due
_locks: dict[str, threading.RLock] = {}
_locks_guard = threading.Lock()


def tenant_lock(tenant: str) -> threading.RLock:
    """The lock a tenant's power actions and compute checks hold (one operator process: the leader)."""
    with _locks_guard:
        return _locks.setdefault(tenant, threading.RLock())


def plan_provisioning(kube: Kube, body: kopf.Body) -> Provisioning | None:
    plan = kube.get(API_VERSION, "plans", body["spec"]["planRef"]) or {}
    return PlanSpec.model_validate(plan.get("spec") or {}).provisioning if plan else None


def power_compute(kube: Kube, body: kopf.Body, tenant: str, wanted: str) -> None:
    """Stop or start the tenant's instances; the result (or the cloud's error code) goes to status.compute, then
    the tenant reconciles again and its Compute condition says it. A failure is recorded, then raised
    (ComputeFailed): the tenant's Ready condition carries the cloud's code and the reconcile is retried with
    backoff, the action asked again."""
    with tenant_lock(tenant):
        _power_compute(kube, body, tenant, wanted)


def _power_compute(kube: Kube, body: kopf.Body, tenant: str, wanted: str) -> None:
    provisioning = plan_provisioning(kube, body)
    if provisioning is None:
        return
    secrets: dict[str, str] = {}
    try:
        adapter, secrets = cloud_adapter(kube, provisioning)
        change = adapter.suspend(tenant) if wanted == STOPPED else adapter.resume(tenant)
        verb = "stopped" if wanted == STOPPED else "started"
        record: dict[str, Any] = {
            "result": DONE,
            "changed": list(change.changed),
            "unchanged": list(change.unchanged),
            "message": f"{len(change.changed)} instance(s) {verb}, {len(change.unchanged)} already {wanted}",
        }
    except ADAPTER_FAILURES as exc:
        record = {"result": FAILED, "changed": [], "unchanged": [], "message": failure_message(exc)}
    record["message"] = redact(record["message"], secrets.values())[:500]
    if record["result"] == FAILED:
        events.warn(body, reason="PowerFailed", message=record["message"])
    else:
        events.info(body, reason="Stopped" if wanted == STOPPED else "Started", message=record["message"])
    compute = {"wanted": wanted, "at": now_rfc3339(), **record}
    kube.merge_patch(API_VERSION, "tenants", tenant, {"status": {"compute": compute}}, subresource="status")
    if record["result"] == FAILED:  # the reconcile fails with it: Ready says it, retried with backoff
        raise ComputeFailed(record["message"])
    touch(kube, "tenants", tenant, "compute", f"{wanted}/{compute['at']}")


def _stopped_while_suspended(status: kopf.Status, **_: Any) -> bool:
    compute = status.get("compute") or {}
    return (
        status.get("phase") == TenantPhase.SUSPENDED
        and compute.get("wanted") == STOPPED
        and compute.get("result") == DONE
    )


class Every:
    """A periodic check per object, at most every `environ[variable]` seconds (read at each tick, default
    `default`), timed on the monotonic clock: due() says whether it is due now, and if so counts it done."""

    def __init__(self, variable: str, default: float) -> None:
        self.variable, self.default = variable, default
        self._last: dict[str, float] = {}

    def due(self, key: str, now: float) -> bool:
        every = float(os.environ.get(self.variable) or self.default)
        if now - self._last.get(key, float("-inf")) < every:
            return False
        self._last[key] = now
        return True


_compute_checks = Every(COMPUTE_CHECK_ENV, DEFAULT_COMPUTE_CHECK_SECONDS)


@kopf.timer(GROUP, VERSION, "tenants", interval=COMPUTE_TICK, when=_stopped_while_suspended)
def keep_suspended_compute_stopped(name: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Suspended tenant whose instances were stopped: what its cloud's inventory shows running now is stopped
    again, with a Warning Event naming it (CloudError: kopf logs it, the next check tries again)."""
    if not leading_now() or not _compute_checks.due(name, time.monotonic()):
        return
    kube: Kube = memo.kube
    with tenant_lock(name):
        fresh = kube.get(API_VERSION, "tenants", name) or {}  # a resume may have been recorded since the event
        status = fresh.get("status") or {}
        recorded = ComputeStatus.model_validate(status["compute"]) if status.get("compute") else None
        provisioning = plan_provisioning(kube, body)
        if provisioning is None or recorded is None:
            return
        adapter, _secrets = cloud_adapter(kube, provisioning)
        running = strays(status.get("phase") == TenantPhase.SUSPENDED, recorded, adapter.inventory(name))
        if not running:
            return
        events.warn(
            body,
            reason="RunningWhileSuspended",
            message=f"{len(running)} instance(s) running while the tenant is Suspended, stopping them again: "
            + ", ".join(running),
        )
        _power_compute(kube, body, name, STOPPED)
