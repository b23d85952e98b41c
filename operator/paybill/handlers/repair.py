"""Objects a Tenant owns, deleted or changed by hand, are put back as the plan says.

One plain watch per owned kind, filtered by the tenant label on the server, in a background thread.
kopf's own per-object machinery would keep state for every Secret, Role and quota of every tenant
(about 0.2 MiB per tenant, see BENCHMARKS.md); these watches keep none. A deletion, or a change that
makes an object differ from the plan, annotates the owning Tenant, whose reconcile converges it. A
resync thread compares every Tenant's objects with its plan each PAYBILL_RESYNC_SECONDS (300), for
what a watch cannot see (a label removed by hand, an event lost while the operator was down).
The credentials Secret is the password's store: only its deletion is repaired. So is an AgentPolicy's Secret
(its agent's login): its deletion annotates the policy, whose reconcile sets a new password and publishes it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import kopf
import psycopg
import urllib3

from ..api.meta import API_VERSION
from ..api.tenant import Access
from ..database import DatabaseUnavailable, TenantDatabases
from ..errors import first_line
from ..kubeclient import Kube, KubeError, load_config, resource_path
from ..lifecycle.agentpolicy import AGENT_SECRET_LABEL, secret_name
from ..lifecycle.drift import Drift, Key, OwnedAction, drift, key_of, maintained, owned_action
from ..lifecycle.reconcile import DataPlacement, Observed, TenantObject, data_problems
from ..lifecycle.tenant import TENANT_LABEL, SecretConflict, controlled_by, owned_manifests
from .apply import TRIGGER
from .health import checked, observe_health

RBAC = "rbac.authorization.k8s.io/v1"
OWNED = (
    ("v1", "namespaces", "Namespace"),
    ("v1", "serviceaccounts", "ServiceAccount"),
    ("v1", "secrets", "Secret"),
    ("v1", "resourcequotas", "ResourceQuota"),
    ("v1", "limitranges", "LimitRange"),
    (RBAC, "roles", "Role"),
    (RBAC, "rolebindings", "RoleBinding"),
    ("networking.k8s.io/v1", "networkpolicies", "NetworkPolicy"),
)
RESYNC_SECONDS_ENV = "PAYBILL_RESYNC_SECONDS"
DEFAULT_RESYNC_SECONDS = 300.0

logger = logging.getLogger(__name__)


def touch_owner(kube: Kube, kind: str, obj: dict[str, Any]) -> bool:
    """Annotate the owning Tenant so that its reconcile recreates what is missing. False if nothing to do."""
    meta = obj.get("metadata") or {}
    name = (meta.get("labels") or {}).get(TENANT_LABEL)
    tenant = kube.get(API_VERSION, "tenants", name) if name else None
    if not name or tenant is None or not maintained(tenant):
        return False
    _touch(kube, name, f"{kind}/{meta.get('namespace', '')}/{meta.get('name')}@{meta.get('resourceVersion', '')}")
    return True


def _touch(kube: Kube, tenant: str, what: str) -> None:
    kube.merge_patch(API_VERSION, "tenants", tenant, {"metadata": {"annotations": {f"{TRIGGER}/repair": what}}})


def touch_policy(kube: Kube, secret: dict[str, Any]) -> bool:
    """Annotate the AgentPolicy that controlled a deleted agent Secret (by uid: the label only filters the watch),
    so that its reconcile publishes the login again. False if that policy is gone or being deleted."""
    meta = secret.get("metadata") or {}
    owner = next((ref for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "AgentPolicy"), None)
    policy = kube.get(API_VERSION, "agentpolicies", owner["name"], meta.get("namespace")) if owner else None
    if owner is None or policy is None or policy["metadata"].get("deletionTimestamp"):
        return False
    if not controlled_by(secret, policy["metadata"]["uid"], "AgentPolicy"):
        return False
    _touch_policy(kube, policy, f"Secret/{meta.get('namespace')}/{meta.get('name')}@{meta.get('resourceVersion', '')}")
    return True


def _touch_policy(kube: Kube, policy: dict[str, Any], what: str) -> None:
    meta = policy["metadata"]
    patch = {"metadata": {"annotations": {f"{TRIGGER}/repair": what}}}
    kube.merge_patch(API_VERSION, "agentpolicies", meta["name"], patch, meta["namespace"])


def drifted(kube: Kube, obj: dict[str, Any]) -> bool:
    """Whether an object a Tenant owns by label differs from what its plan says (or is not the Tenant's)."""
    name = ((obj.get("metadata") or {}).get("labels") or {}).get(TENANT_LABEL)
    tenant = kube.get(API_VERSION, "tenants", name) if name else None
    plan = kube.get(API_VERSION, "plans", tenant["spec"]["planRef"]) if tenant else None
    if tenant is None or plan is None:
        return False
    desired = next((m for m in owned_manifests(tenant, plan) if key_of(m) == key_of(obj)), None)
    return desired is not None and owned_action(obj, desired) != OwnedAction.KEEP


class OwnedObjectsWatch(threading.Thread):
    selector = TENANT_LABEL

    def __init__(self, api_version: str, plural: str, kind: str, stop: threading.Event) -> None:
        super().__init__(name=f"paybill-repair-{plural}-{self.selector}", daemon=True)
        self.api_version, self.plural, self.kind, self.stop = api_version, plural, kind, stop

    def on_event(self, kube: Kube, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED" or (
            event_type in ("ADDED", "MODIFIED") and self.kind != "Secret" and drifted(kube, {**obj, "kind": self.kind})
        ):
            touch_owner(kube, self.kind, obj)

    def run(self) -> None:
        kube = Kube()
        version: str | None = None
        while not self.stop.is_set():
            try:
                if version is None:
                    listing = kube.request(
                        "GET",
                        resource_path(self.api_version, self.plural),
                        query={"labelSelector": self.selector, "limit": "1"},
                    )
                    version = str(listing["metadata"]["resourceVersion"])
                for event in kube.watch(self.api_version, self.plural, version, self.selector):
                    obj = event.get("object") or {}
                    if event.get("type") == "ERROR":
                        version = None  # expired (410): start again from a fresh list
                        break
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    self.on_event(kube, str(event.get("type")), obj)
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


class AgentSecretsWatch(OwnedObjectsWatch):
    """The AgentPolicies' Secrets: a deletion has the policy publish its login again."""

    selector = AGENT_SECRET_LABEL

    def on_event(self, kube: Kube, event_type: str, obj: dict[str, Any]) -> None:
        if event_type == "DELETED":
            touch_policy(kube, obj)


def observe_owned(kube: Kube, desired: list[dict[str, Any]]) -> dict[Key, dict[str, Any]]:
    """The owned objects as they are: one labelled list per kind, then a read of each desired object the lists
    missed (deleted, or its label removed by hand)."""
    observed: dict[Key, dict[str, Any]] = {}
    for api_version, plural, kind in OWNED:
        if kind == "Secret":  # never compared with a plan: not read in bulk
            continue
        listing = kube.request("GET", resource_path(api_version, plural), query={"labelSelector": TENANT_LABEL})
        observed.update({key_of({**obj, "kind": kind}): obj for obj in listing["items"]})
    for manifest in desired:
        if key_of(manifest) not in observed:
            plural, namespaced = kube.plural_of(manifest["apiVersion"], manifest["kind"])
            _, namespace, name = key_of(manifest)
            found = kube.get(manifest["apiVersion"], plural, name, namespace if namespaced else None)
            if found is not None:
                observed[key_of(manifest)] = found
    return observed


def resync(kube: Kube) -> dict[str, list[Drift]]:
    """Compare every maintained Tenant's owned objects with its plan; annotate each Tenant that drifted."""
    plans = {plan["metadata"]["name"]: plan for plan in kube.list(API_VERSION, "plans")}
    desired = {
        tenant["metadata"]["name"]: owned_manifests(tenant, plans[tenant["spec"]["planRef"]])
        for tenant in kube.list(API_VERSION, "tenants")
        if maintained(tenant) and tenant["spec"].get("planRef") in plans
    }
    observed = observe_owned(kube, [manifest for manifests in desired.values() for manifest in manifests])
    found = {name: drifts for name, manifests in desired.items() if (drifts := drift(manifests, observed))}
    for name, drifts in found.items():
        _touch(
            kube,
            name,
            f"resync: {drifts[0]}@{drifts[0].resource_version}"
            + (f" and {len(drifts) - 1} more" if len(drifts) > 1 else ""),
        )
    return found


def resync_data(kube: Kube, databases: TenantDatabases) -> dict[str, list[tuple[str, str]]]:
    """Check every provisioned Tenant's data (placement record, role access, credentials); annotate each one
    found broken, so that its reconcile says so and repairs it."""
    found: dict[str, list[tuple[str, str]]] = {}
    for manifest in kube.list(API_VERSION, "tenants"):
        tenant = TenantObject.of(manifest)
        if not checked(tenant) or tenant.status.access is None:
            continue
        try:  # each tenant on its own: one that cannot be checked never stops the checks of the others
            recorded, _, _ = databases.recorded(tenant.name)
            health = observe_health(kube, databases, tenant, recorded) if recorded else None
        except SecretConflict:  # not the tenant's Secret: its reconcile says so
            continue
        except (DatabaseUnavailable, psycopg.Error) as exc:  # its reconcile finds out and says so in Ready
            found[tenant.name] = [("DatabaseUnavailable", first_line(exc))]
            _touch(kube, tenant.name, f"resync: unreachable@{manifest['metadata'].get('resourceVersion', '')}")
            continue
        seen = Observed(data=DataPlacement(recorded), health=health)
        version = manifest["metadata"].get("resourceVersion", "")
        if problems := data_problems(tenant, seen, Access(tenant.status.access)):
            found[tenant.name] = problems
            _touch(kube, tenant.name, f"resync: {problems[0][0]}@{version}")
        elif tenant.condition("DataHealthy") is None:  # provisioned, never verified: its reconcile says so
            _touch(kube, tenant.name, f"resync: verify@{version}")
    return found


def resync_agent_secrets(kube: Kube) -> list[tuple[str, str]]:
    """Annotate every Ready AgentPolicy whose Secret is gone (deleted while no watch saw it); (namespace, name)
    of each one annotated."""
    lost = []
    for policy in kube.list(API_VERSION, "agentpolicies"):
        meta = policy["metadata"]
        if (policy.get("status") or {}).get("phase") != "Ready" or meta.get("deletionTimestamp"):
            continue
        if kube.get("v1", "secrets", secret_name(meta["name"]), meta["namespace"]) is None:
            _touch_policy(kube, policy, f"resync: Secret/{meta['namespace']}/{secret_name(meta['name'])} missing")
            lost.append((meta["namespace"], meta["name"]))
    return lost


class Resync(threading.Thread):
    def __init__(self, period: float, stop: threading.Event, memo: kopf.Memo) -> None:
        super().__init__(name="paybill-resync", daemon=True)
        self.period, self.stop, self.memo = period, stop, memo

    def run(self) -> None:
        kube = Kube()
        while not self.stop.wait(self.period):
            try:
                for name, drifts in resync(kube).items():
                    logger.info("resync: tenant %s drifted from its plan: %s", name, ", ".join(map(str, drifts)))
                for namespace, name in resync_agent_secrets(kube):
                    logger.warning(
                        "resync: the Secret of AgentPolicy %s/%s was gone; publishing it again", namespace, name
                    )
                databases: TenantDatabases | None = self.memo.databases
                for name, problems in (resync_data(kube, databases) if databases else {}).items():
                    logger.warning("resync: tenant %s: %s", name, "; ".join(message for _, message in problems))
            except (KubeError, OSError, ValueError, urllib3.exceptions.HTTPError) as exc:
                logger.warning("resync failed (%s); next in %s s", exc, self.period)
            except Exception:  # the loop must not die: log and go on
                logger.exception("resync crashed; next in %s s", self.period)


def resync_period(environ: Mapping[str, str]) -> float:
    return float(environ.get(RESYNC_SECONDS_ENV) or DEFAULT_RESYNC_SECONDS)


@kopf.on.startup()
def start_repair(memo: kopf.Memo, **_: Any) -> None:
    load_config()  # each watch has its own client (and connection) from the same configuration
    memo.repair_stop = threading.Event()
    for api_version, plural, kind in OWNED:
        OwnedObjectsWatch(api_version, plural, kind, memo.repair_stop).start()
    AgentSecretsWatch("v1", "secrets", "Secret", memo.repair_stop).start()
    Resync(resync_period(os.environ), memo.repair_stop, memo).start()


@kopf.on.cleanup()
def stop_repair(memo: kopf.Memo, **_: Any) -> None:
    if getattr(memo, "repair_stop", None) is not None:
        memo.repair_stop.set()
