"""Writes: create, update, patch and delete with the apiserver's rules: optimistic concurrency, the status
subresource, admission (webhooks and CRD schemas), dryRun and CRD registration."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from kmock._internal import rendering

from .access import AccessControl
from .admission import Admission, AdmissionDenied, AdmissionRequest
from .events import validate_event
from .finalizers import Finalizers
from .patching import APPLY, PatchError, apply_patch
from .registry import CRD_KEY, NAMESPACE_KEY, ResourceType
from .replies import ApiError, invalid, not_found, qualified, status_error
from .routing import Route
from .schema import FieldError, apply_defaults, prune, validate
from .stamping import check_meta, named, now, spec_changed, stamp_new, unchanged

IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
WEBHOOK_KEYS = {
    "mutating": ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
    "validating": ("admissionregistration.k8s.io", "validatingwebhookconfigurations"),
}


PATCH_ATTEMPTS = 5


class Stale(ApiError):
    """The object changed while the webhooks ran (a 409 Conflict; a patch is applied again)."""


class Writes(Finalizers):
    """Create, update, patch, delete (a mixin of EmulatedApiServer)."""

    admission: Admission
    access: AccessControl
    _lock: asyncio.Lock

    async def _create(self, route: Route, body: Any, dry_run: bool, field_validation: str | None) -> dict[str, Any]:
        rtype = route.rtype
        if not isinstance(body, dict):
            raise status_error(400, "BadRequest", "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if rtype.namespaced:
            namespace = route.namespace or meta.get("namespace")
            if meta.get("namespace") and route.namespace and meta["namespace"] != route.namespace:
                raise status_error(
                    400,
                    "BadRequest",
                    "the namespace of the provided object does not match the namespace sent on the request",
                )
            if not namespace:
                raise status_error(400, "BadRequest", "a namespace is required for namespaced resources")
            self._require_live_namespace(namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        stamp_new(rtype, obj)
        # as kube-apiserver: a generated name and the metadata checks come after the mutating webhooks, and a name
        # already taken is found when the object is stored, after every webhook (_unchanged_since)
        obj = await self._admit(route, "CREATE", obj, None, dry_run, field_validation)
        if rtype.key == CRD_KEY:
            self._accept_crd(obj)
        if dry_run:
            return obj
        self._commit(rtype, obj, "ADDED")
        return obj

    def _require_live_namespace(self, namespace: str) -> None:
        ns = self.store.get(NAMESPACE_KEY, None, namespace)
        if ns is None:
            raise status_error(
                404, "NotFound", f'namespaces "{namespace}" not found', {"name": namespace, "kind": "namespaces"}
            )
        if ns["metadata"].get("deletionTimestamp"):
            raise status_error(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} because it is being terminated",
            )

    async def _admit(
        self,
        route: Route,
        operation: str,
        obj: dict[str, Any],
        old: dict[str, Any] | None,
        dry_run: bool,
        field_validation: str | None,
    ) -> dict[str, Any]:
        """Mutating webhooks, then schema pruning/defaulting/validation, then validating webhooks."""
        rtype = route.rtype
        self.access.check_escalation(rtype.key, obj, old, self.store)  # RBAC escalate/bind
        name = obj["metadata"].get("name") or ""  # none yet for a generateName create
        namespace = obj["metadata"].get("namespace")
        ns_obj = self.store.get(NAMESPACE_KEY, None, namespace) if namespace else None
        ns_labels = (ns_obj or {}).get("metadata", {}).get("labels") or {}
        request = AdmissionRequest(rtype, operation, name, namespace, route.subresource, obj, old, dry_run, ns_labels)
        try:
            mutated = await self._review("mutating", request)
            assert mutated is not None
            if old is None:
                named(rtype, mutated)
            obj = self._apply_schema(rtype, mutated, old, field_validation)
            await self._review("validating", AdmissionRequest(**{**request.__dict__, "obj": obj}))
        except AdmissionDenied as denied:
            raise status_error(denied.code, denied.reason, denied.message) from None
        self._unchanged_since(route, obj, old)
        return obj

    def _webhooks(self, kind: str) -> list[dict[str, Any]]:
        return self.store.list(WEBHOOK_KEYS[kind])

    async def _review(self, kind: str, request: AdmissionRequest) -> dict[str, Any] | None:
        """Call the webhooks of `kind` with the write lock released, as kube-apiserver serves other requests while
        it waits for a webhook (a webhook that writes through the API server, as the operator's audit checkpoint
        does, would otherwise wait on its own request until it times out). The caller checks, once it holds the
        lock again, that the object did not change meanwhile (`_unchanged_since`)."""
        configurations = self._webhooks(kind)
        if not configurations:
            return request.obj
        self._lock.release()
        try:
            return await self.admission.review(configurations, request, mutating=kind == "mutating")
        finally:
            await self._lock.acquire()

    def _unchanged_since(self, route: Route, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """409, as etcd's compare-and-swap answers kube-apiserver, when the object was written (or, for a create,
        made) while the webhooks ran."""
        rtype, meta = route.rtype, obj["metadata"]
        stored = self.store.get(rtype.key, meta.get("namespace") if rtype.namespaced else None, meta["name"])
        details = {"name": meta["name"], "group": rtype.group, "kind": rtype.plural}
        if old is None and stored is not None:
            raise status_error(409, "AlreadyExists", f'{qualified(rtype)} "{meta["name"]}" already exists', details)
        if old is not None and (stored or {}).get("metadata", {}).get("resourceVersion") != old["metadata"].get(
            "resourceVersion"
        ):
            raise Stale(
                status=409,
                reason="Conflict",
                message=f'Operation cannot be fulfilled on {qualified(rtype)} "{meta["name"]}": the object has been '
                "modified; please apply your changes to the latest version and try again",
                details=details,
            )

    def _apply_schema(
        self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None, field_validation: str | None
    ) -> dict[str, Any]:
        if rtype.schema is None:
            errors = validate_event(obj, creating=old is None) if rtype.kind == "Event" else []
            if errors:
                raise invalid(rtype, obj["metadata"].get("name", ""), errors)
            return obj
        meta = obj.pop("metadata")
        pruned, dropped = prune(obj, rtype.schema)
        if dropped and field_validation == "Strict":
            fields = ", ".join(f'unknown field "{path}"' for path in dropped)
            raise status_error(400, "BadRequest", f"strict decoding error: {fields}")
        pruned = apply_defaults(pruned, rtype.schema)
        # CEL rules at the root see metadata.name and metadata.generateName only, as on kube-apiserver
        checked = {**pruned, "metadata": _cel_metadata(meta)}
        old_body = {**old, "metadata": _cel_metadata(old["metadata"])} if old is not None else None
        errors = validate(checked, rtype.schema, old_body) if old_body is not None else validate(checked, rtype.schema)
        if errors:
            raise invalid(rtype, meta.get("name", ""), errors)
        return {
            "apiVersion": pruned.pop("apiVersion", rtype.api_version),
            "kind": pruned.pop("kind", rtype.kind),
            "metadata": meta,
            **pruned,
        }

    async def _update(self, route: Route, body: Any, dry_run: bool, field_validation: str | None) -> dict[str, Any]:
        current = self._current(route)
        if not isinstance(body, dict):
            raise status_error(400, "BadRequest", "the request body must be a JSON object")
        sent_version = (body.get("metadata") or {}).get("resourceVersion")
        if not sent_version and route.rtype.custom and route.subresource is None:
            raise invalid(
                route.rtype,
                route.name or "",
                [
                    FieldError(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )
                ],
            )
        return await self._write(route, current, copy.deepcopy(body), dry_run, field_validation)

    async def _patch(
        self, route: Route, content_type: str, patch: Any, dry_run: bool, field_validation: str | None
    ) -> dict[str, Any]:
        """A patch without a resourceVersion is applied again to the object as it is now when it was written while
        the webhooks ran (kube-apiserver's GuaranteedUpdate); with one, that is a 409."""
        for _ in range(PATCH_ATTEMPTS - 1):
            try:
                return await self._patch_once(route, content_type, patch, dry_run, field_validation)
            except Stale:
                if isinstance(patch, dict) and (patch.get("metadata") or {}).get("resourceVersion"):
                    raise
        return await self._patch_once(route, content_type, patch, dry_run, field_validation)

    async def _patch_once(
        self, route: Route, content_type: str, patch: Any, dry_run: bool, field_validation: str | None
    ) -> dict[str, Any]:
        current = self._current(route)
        if content_type == APPLY:
            raise status_error(
                415,
                "UnsupportedMediaType",
                "server-side apply is not supported by the emulated API server; use client-side apply",
            )
        try:
            patched = apply_patch(content_type, current, patch)
        except PatchError as exc:
            code = 415 if "unsupported patch type" in str(exc) else 422
            raise status_error(code, "UnsupportedMediaType" if code == 415 else "Invalid", str(exc)) from None
        patched_meta = patched.setdefault("metadata", {})
        sent_version = (patch.get("metadata") or {}).get("resourceVersion") if isinstance(patch, dict) else None
        patched_meta["resourceVersion"] = sent_version or current["metadata"]["resourceVersion"]
        return await self._write(route, current, patched, dry_run, field_validation)

    def _current(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        current = self.store.get(route.rtype.key, route.namespace, route.name)
        if current is None:
            raise not_found(route.rtype, route.name)
        return self._served(route.rtype, current)

    async def _write(
        self, route: Route, current: dict[str, Any], new: dict[str, Any], dry_run: bool, field_validation: str | None
    ) -> dict[str, Any]:
        """Replace ``current`` by ``new`` with the apiserver's rules for the main resource and /status."""
        rtype = route.rtype
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        sent_version = meta.get("resourceVersion")
        if sent_version and sent_version != old_meta["resourceVersion"]:
            raise status_error(
                409,
                "Conflict",
                f"Operation cannot be fulfilled on {qualified(rtype)} "
                f'"{route.name}": the object has been modified; please apply '
                "your changes to the latest version and try again",
                {"name": route.name, "group": rtype.group, "kind": rtype.plural},
            )
        if route.subresource == "status":
            obj = copy.deepcopy(current)
            if "status" in new:
                obj["status"] = new["status"]
            else:
                obj.pop("status", None)
        else:
            obj = new
            if rtype.status_subresource:
                if "status" in current:
                    obj["status"] = copy.deepcopy(current["status"])
                else:
                    obj.pop("status", None)
            for kept in (
                "uid",
                "creationTimestamp",
                "namespace",
                "name",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ):
                if kept in old_meta:
                    meta[kept] = old_meta[kept]
                else:
                    meta.pop(kept, None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise invalid(
                        rtype,
                        route.name or "",
                        [
                            FieldError(
                                "FieldValueForbidden",
                                "metadata.finalizers",
                                "Forbidden: no new finalizers can be added if the object is being deleted",
                            )
                        ],
                    )
            check_meta(rtype, obj)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        obj = await self._admit(route, "UPDATE", obj, current, dry_run, field_validation)
        if spec_changed(current, obj):
            obj["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        if unchanged(current, obj):
            return current
        if rtype.key == CRD_KEY:
            self._accept_crd(obj)
        if dry_run:
            return obj
        if obj["metadata"].get("deletionTimestamp") and not obj["metadata"].get("finalizers"):
            self._finalize(rtype, obj)
            return obj
        self._commit(rtype, obj, "MODIFIED")
        return obj

    async def _delete(self, route: Route, options: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        rtype = route.rtype
        if rtype.key == NAMESPACE_KEY and route.name in IMMORTAL_NAMESPACES:  # the NamespaceLifecycle admission
            raise status_error(
                403,
                "Forbidden",
                f'namespaces "{route.name}" is forbidden: this namespace may not be deleted',
                {"name": route.name, "kind": "namespaces"},
            )
        current = self._current(route)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            if preconditions.get(field_name) and preconditions[field_name] != current["metadata"].get(field_name):
                raise status_error(
                    409,
                    "Conflict",
                    f"Precondition failed: {field_name} in precondition: "
                    f"{preconditions[field_name]}, {field_name} in object meta: "
                    f"{current['metadata'].get(field_name)}",
                )
        await self._admit_delete(route, current, dry_run)
        current = self._current(route)  # as it is now: webhooks ran without the lock
        if dry_run:
            return current
        return self._mark_or_remove(rtype, current)

    async def _admit_delete(self, route: Route, current: dict[str, Any], dry_run: bool) -> None:
        meta = current["metadata"]
        request = AdmissionRequest(
            route.rtype, "DELETE", meta["name"], meta.get("namespace"), None, None, current, dry_run, {}
        )
        try:
            await self._review("validating", request)
        except AdmissionDenied as denied:
            raise status_error(denied.code, denied.reason, denied.message) from None

    async def _delete_collection(self, request: rendering.Request, route: Route, dry_run: bool) -> dict[str, Any]:
        matches = self._matcher(request, route)
        deleted = []
        for obj in list(self.store.list(route.rtype.key, route.namespace)):
            if matches(obj):
                item_route = Route(route.rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"], None)
                deleted.append(await self._delete(item_route, {}, dry_run))
        return {
            "kind": f"{route.rtype.kind}List",
            "apiVersion": route.rtype.api_version,
            "metadata": {"resourceVersion": str(self.store.revision)},
            "items": deleted,
        }

    def _accept_crd(self, crd: dict[str, Any]) -> None:
        try:
            self.registry.register_crd(crd)
        except (KeyError, TypeError) as exc:
            raise status_error(422, "Invalid", f"CustomResourceDefinition is invalid: missing {exc}") from None
        names = crd["spec"]["names"]
        crd["status"] = {
            "acceptedNames": {
                k: names[k]
                for k in ("kind", "listKind", "plural", "singular", "shortNames", "categories")
                if k in names
            },
            "storedVersions": [v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")],
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                    "lastTransitionTime": now(),
                },
                {
                    "type": "Established",
                    "status": "True",
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                    "lastTransitionTime": now(),
                },
            ],
        }


def _cel_metadata(meta: dict[str, Any]) -> dict[str, Any]:
    return {key: meta[key] for key in ("name", "generateName") if key in meta}
