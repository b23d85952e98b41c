"""Finalizers and garbage collection: deletion that waits on finalizers, namespace termination, dependents
removed with their owner, and the commit that indexes owner references for it."""

from __future__ import annotations

import copy
from typing import Any

from .registry import CRD_KEY, NAMESPACE_KEY, Registry, ResourceType
from .replies import Replies
from .stamping import now


class Finalizers(Replies):
    """Commits, deletion and garbage collection (a mixin of EmulatedApiServer)."""

    registry: Registry
    _dependents: dict[str, set[tuple[tuple[str, str], str | None, str]]]

    def _mark_or_remove(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        if current["metadata"].get("deletionTimestamp"):
            return current
        if rtype.key == NAMESPACE_KEY or current["metadata"].get("finalizers"):
            obj = copy.deepcopy(current)
            obj["metadata"].update(
                deletionTimestamp=now(),
                deletionGracePeriodSeconds=0,
                generation=int(obj["metadata"].get("generation", 1)) + 1,
            )
            if rtype.key == NAMESPACE_KEY:
                obj["status"] = {"phase": "Terminating"}
            self._commit(rtype, obj, "MODIFIED")
            if rtype.key == NAMESPACE_KEY:
                self._terminate_namespace(obj)
            return self.store.get(rtype.key, obj["metadata"].get("namespace"), obj["metadata"]["name"]) or obj
        self._finalize(rtype, current)
        return current

    def _commit(self, rtype: ResourceType, obj: dict[str, Any], event_type: str) -> None:
        obj["metadata"]["resourceVersion"] = str(self.store.next_revision())
        self._index_owners(rtype.key, obj)
        self.store.put(rtype.key, obj, event_type)

    def _index_owners(self, key: tuple[str, str], obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            self._dependents.setdefault(ref["uid"], set()).add((key, meta.get("namespace"), meta["name"]))

    def _finalize(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        """Remove an object for good, then everything that depended on it."""
        meta = obj["metadata"]
        self.store.remove(rtype.key, obj)
        if rtype.key == CRD_KEY:
            for removed in self.registry.unregister_crd(meta["name"]):
                self.store.drop_collection(removed.key)
        namespace = meta.get("namespace")
        if namespace:
            ns = self.store.get(NAMESPACE_KEY, None, namespace)
            if ns is not None and ns["metadata"].get("deletionTimestamp"):
                self._terminate_namespace(ns)
        for key, dep_namespace, dep_name in sorted(self._dependents.pop(meta["uid"], set()), key=str):
            dependent = self.store.get(key, dep_namespace, dep_name)
            owners = [ref["uid"] for ref in (dependent or {}).get("metadata", {}).get("ownerReferences") or []]
            if dependent is not None and meta["uid"] in owners:
                self._mark_or_remove(self.registry.by_key(key), dependent)

    def _terminate_namespace(self, ns: dict[str, Any]) -> None:
        name = ns["metadata"]["name"]
        remaining = False
        for key, obj in list(self.store.namespaced_in(name)):
            if not obj["metadata"].get("deletionTimestamp"):
                self._mark_or_remove(self.registry.by_key(key), obj)
            if self.store.get(key, name, obj["metadata"]["name"]) is not None:
                remaining = True
        current = self.store.get(NAMESPACE_KEY, None, name)
        if not remaining and current is not None and not current["metadata"].get("finalizers"):
            self._finalize(self.registry.by_key(NAMESPACE_KEY), current)
