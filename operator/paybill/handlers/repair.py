"""Objects a Tenant owns, deleted by hand, are put back.

One plain watch per owned kind, filtered by the tenant label on the server, in a background thread.
kopf's own per-object machinery would keep state for every Secret, Role and quota of every tenant
(about 0.2 MiB per tenant, see BENCHMARKS.md); these watches keep none and only act on DELETED.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import kopf
import urllib3

from ..api.meta import API_VERSION
from ..api.tenant import TenantPhase as Phase
from ..kube.client import Kube, KubeError, load_config
from ..lifecycle.tenant import TENANT_LABEL
from .tenant import TRIGGER

OWNED = (("v1", "namespaces"), ("v1", "serviceaccounts"), ("v1", "secrets"), ("v1", "resourcequotas"),
         ("v1", "limitranges"), ("rbac.authorization.k8s.io/v1", "roles"),
         ("rbac.authorization.k8s.io/v1", "rolebindings"), ("networking.k8s.io/v1", "networkpolicies"))

logger = logging.getLogger(__name__)


def touch_owner(kube: Kube, kind: str, obj: dict[str, Any]) -> bool:
    """Annotate the owning Tenant so that its reconcile recreates what is missing. False if nothing to do."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(TENANT_LABEL)
    tenant = kube.get(API_VERSION, "tenants", name) if name else None
    if not name or tenant is None:
        return False
    if tenant["metadata"].get("deletionTimestamp") or tenant.get("spec", {}).get("offboard"):
        return False
    if (tenant.get("status") or {}).get("phase") in (Phase.OFFBOARDING, Phase.OFFBOARDED):
        return False
    lost = f"{kind}/{meta.get('namespace', '')}/{meta.get('name')}@{meta.get('resourceVersion', '')}"
    kube.merge_patch(API_VERSION, "tenants", name, {"metadata": {"annotations": {f"{TRIGGER}/repair": lost}}})
    return True


class OwnedObjectsWatch(threading.Thread):
    def __init__(self, api_version: str, plural: str, stop: threading.Event) -> None:
        super().__init__(name=f"paybill-repair-{plural}", daemon=True)
        self.api_version, self.plural, self.stop = api_version, plural, stop

    def run(self) -> None:
        kube = Kube()
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    listing = kube.request("GET", f"/api/{self.api_version}/{self.plural}"
                                           if "/" not in self.api_version else
                                           f"/apis/{self.api_version}/{self.plural}",
                                           query={"labelSelector": TENANT_LABEL, "limit": "1"})
                    version = str(listing["metadata"]["resourceVersion"])
                for event in kube.watch(self.api_version, self.plural, version, TENANT_LABEL):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = None  # expired (410): start again from a fresh list
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") == "DELETED":
                        touch_owner(kube, obj.get("kind") or self.plural, obj)
                    if self.stop.is_set():
                        return
            except (KubeError, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                if self.stop.is_set():
                    return
                logger.warning("watch of %s failed (%s); retrying", self.plural, exc)
                version = None
                self.stop.wait(1.0)
            except Exception:  # a watcher must not die: log and start over
                logger.exception("watch of %s crashed; restarting", self.plural)
                version = None
                self.stop.wait(1.0)


@kopf.on.startup()
def start_repair(memo: kopf.Memo, **_: Any) -> None:
    load_config()  # each watch has its own client (and connection) from the same configuration
    memo.repair_stop = threading.Event()
    for api_version, plural in OWNED:
        OwnedObjectsWatch(api_version, plural, memo.repair_stop).start()


@kopf.on.cleanup()
def stop_repair(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "repair_stop", None) is not None:
        memo.repair_stop.set()
