"""Orphans: every PAYBILL_ORPHAN_CHECK_SECONDS (3600) each Plan provisioning on a cloud looks, through its
adapter, for resources tagged with a tenant that no longer exists. The finding goes to the Plan's status.orphans,
and a new or changed one to a Warning Event on the Plan (clouds/orphans.py decides both)."""

from __future__ import annotations

import time
from typing import Any

import kopf

from ..api.meta import API_VERSION, GROUP, VERSION, now_rfc3339
from ..api.plan import Cloud, PlanSpec
from ..clouds import orphans as decide
from ..clouds.preflight import gate as cloud_gate
from ..clouds.retry import redact
from ..kubeclient import Kube
from . import events
from .compute import ADAPTER_FAILURES, Every, cloud_adapter, failure_message
from .instrument import leading_now

ORPHAN_CHECK_ENV = "PAYBILL_ORPHAN_CHECK_SECONDS"
DEFAULT_ORPHAN_CHECK_SECONDS = 3600.0
ORPHAN_TICK = 5.0  # seconds: how often a Plan looks whether its check is due
_checks = Every(ORPHAN_CHECK_ENV, DEFAULT_ORPHAN_CHECK_SECONDS)  # by Plan uid


def _on_a_cloud(spec: kopf.Spec, **_: Any) -> bool:
    provisioning = spec.get("provisioning") or {}
    return bool(provisioning.get("cloud")) and provisioning.get("cloud") != Cloud.LOCAL


@kopf.timer(GROUP, VERSION, "plans", interval=ORPHAN_TICK, when=_on_a_cloud)
def look_for_orphans(name: str, uid: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    provisioning = PlanSpec.model_validate(body["spec"]).provisioning
    if provisioning is None or cloud_gate(body) is not None:  # a cloud whose preflight has not passed is not asked
        return
    if not leading_now() or not _checks.due(uid, time.monotonic()):
        return
    kube: Kube = memo.kube
    known = [tenant["metadata"]["name"] for tenant in kube.list(API_VERSION, "tenants")]  # before the cloud is read
    secrets: dict[str, str] = {}
    try:
        adapter, secrets = cloud_adapter(kube, provisioning)
        found = decide.report(adapter.orphans(known), now_rfc3339())
    except ADAPTER_FAILURES as exc:
        found = decide.failed(redact(failure_message(exc), secrets.values())[:500], now_rfc3339())
    said = decide.warning(found, (body.get("status") or {}).get("orphans"))
    if said is not None:
        events.warn(body, reason=decide.FAILED_REASON if found.error else decide.REASON, message=said)
    patch = {"status": {"orphans": found.model_dump()}}  # a None (no error now) removes the old one
    kube.merge_patch(API_VERSION, "plans", name, patch, subresource="status")
