"""Events about Paybill's objects, posted where `kubectl describe` looks for them.

kopf fills in involvedObject.namespace for a cluster-scoped object (Tenant, Plan, Subscription) with its own
default namespace (kopf issue #949), while `kubectl describe` selects Events with an empty one, so a real
cluster shows none. Paybill posts its Events itself: a cluster-scoped object's in `default` with no namespace
in the reference, as client-go's recorder does, with the reporting fields kube-apiserver requires.
"""

from __future__ import annotations

import datetime
import logging
import socket
from collections.abc import Mapping
from typing import Any

from ..kubeclient import Kube, KubeError

COMPONENT = "paybill-operator"
MAX_MESSAGE = 1024  # kube-apiserver's limit on an Event's message
CUT = "..."

log = logging.getLogger(__name__)
_recorder: Recorder | None = None


def event_body(
    obj: Mapping[str, Any], type_: str, reason: str, message: str, instance: str, now: datetime.datetime
) -> dict[str, Any]:
    """The core/v1 Event about `obj`; a cluster-scoped object's lives in `default`."""
    meta = obj.get("metadata") or {}
    involved = {
        "apiVersion": obj.get("apiVersion"),
        "kind": obj.get("kind"),
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "resourceVersion": meta.get("resourceVersion"),
    }
    if meta.get("namespace"):
        involved["namespace"] = meta["namespace"]
    stamp = now.astimezone(datetime.UTC)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{meta.get('name')}.{int(stamp.timestamp() * 1e9):x}",
            "namespace": meta.get("namespace") or "default",
        },
        "involvedObject": {key: value for key, value in involved.items() if value},
        "type": type_,
        "reason": reason,
        "message": shorten(message),
        "action": "Reconcile",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "lastTimestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "eventTime": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "count": 1,
    }


def shorten(message: str) -> str:
    """At most MAX_MESSAGE characters, keeping both ends."""
    if len(message) <= MAX_MESSAGE:
        return message
    half = (MAX_MESSAGE - len(CUT)) // 2
    return message[:half] + CUT + message[-half:]


class Recorder:
    def __init__(self, kube: Kube, instance: str) -> None:
        self.kube = kube
        self.instance = instance

    def post(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        body = event_body(obj, type_, reason, message, self.instance, datetime.datetime.now(datetime.UTC))
        try:
            self.kube.request("POST", f"/api/v1/namespaces/{body['metadata']['namespace']}/events", body)
        except KubeError as exc:  # an Event is best effort: the status already says it
            log.warning(
                "could not post Event %s about %s %s: %s",
                reason,
                obj.get("kind"),
                body["involvedObject"].get("name"),
                exc,
            )


def install(kube: Kube) -> None:
    """Called once at operator start."""
    global _recorder
    _recorder = Recorder(kube, socket.gethostname())  # the pod name in a cluster


def info(obj: Mapping[str, Any], reason: str, message: str) -> None:
    _post(obj, "Normal", reason, message)


def warn(obj: Mapping[str, Any], reason: str, message: str) -> None:
    _post(obj, "Warning", reason, message)


def _post(obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
    if _recorder is None:
        raise RuntimeError("paybill.handlers.events.install() was not called at operator start")
    _recorder.post(obj, type_, reason, message)
