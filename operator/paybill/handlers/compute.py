"""A tenant's instances stopped and started through its plan's cloud adapter (the PowerCompute action
clouds/compute.py decides), and the adapter a Plan's provisioning points at: its credentials Secret, and the
loopback endpoint PAYBILL_CLOUD_ENDPOINTS may name for it (tests and fakes)."""

from __future__ import annotations

import base64
import os
from typing import Any

import kopf

from ..api.meta import API_VERSION, now_rfc3339
from ..api.plan import PlanSpec, Provisioning
from ..clouds import Cloud, CloudAdapter, CloudError
from ..clouds import preflight as cloud_preflight
from ..clouds.compute import DONE, FAILED, STOPPED
from ..clouds.retry import redact
from ..errors import first_line
from ..kubeclient import Kube
from . import events
from .apply import operator_namespace, touch


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


def power_compute(kube: Kube, body: kopf.Body, tenant: str, wanted: str) -> None:
    """Stop or start the tenant's instances; the result (or the cloud's error code) goes to status.compute, then
    the tenant reconciles again and its Compute condition says it. A failure is recorded, then raised
    (ComputeFailed): the tenant's Ready condition carries the cloud's code and the reconcile is retried with
    backoff, the action asked again."""
    plan = kube.get(API_VERSION, "plans", body["spec"]["planRef"]) or {}
    provisioning = PlanSpec.model_validate(plan.get("spec") or {}).provisioning if plan else None
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
    except CloudError as error:
        status = f" (HTTP {error.status})" if error.status else ""
        message = f"{error.cloud} answered {error.code}{status}: {error.message}"
        record = {"result": FAILED, "changed": [], "unchanged": [], "message": message}
    except (TimeoutError, ValueError, ImportError) as exc:
        record = {
            "result": FAILED,
            "changed": [],
            "unchanged": [],
            "message": f"{type(exc).__name__}: {first_line(exc)}",
        }
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
