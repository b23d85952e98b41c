"""The emulated Kubernetes API server: kmock's HTTP scaffold plus the apiserver behaviour Paybill relies on.

kmock 0.8 serves HTTP, records requests and lets tests inject reactions (faults, delays) with its DSL. Its
own ``KubernetesEmulator`` merges everything into the object and answers 500 for namespaced URLs, so this
subclass of ``KubernetesScaffold`` brings its own routing and storage: uid/resourceVersion/generation
stamping, optimistic concurrency, the status subresource, watch from a resourceVersion with bookmarks,
finalizers, namespace deletion, garbage collection by owner, CRD registration with schema validation and
defaulting, admission webhooks, dryRun, server-side printing and OpenAPI documents.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import json
import logging
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import enums, parsing, rendering

from . import conversion, openapi, tables
from .access import AccessControl, Refused
from .admission import Admission, AdmissionDenied, AdmissionRequest
from .events import validate_event
from .patching import APPLY, PatchError, apply_patch
from .registry import Registry, ResourceType
from .schema import FieldError, apply_defaults, prune, validate
from .selectors import SelectorError, field_labels, parse_field_selector, parse_label_selector
from .store import Expired, Store, WatchEvent

logger = logging.getLogger(__name__)

SERVER_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-paybill-emulated", "gitCommit": "emulated",
                  "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z", "goVersion": "go1.22",
                  "compiler": "gc", "platform": "linux/amd64"}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
MAX_ANNOTATIONS_BYTES = 262144
CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
IMMORTAL_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
OPTIONS_KINDS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions", "DELETE": "DeleteOptions"}
WEBHOOK_KEYS = {"mutating": ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"),
                "validating": ("admissionregistration.k8s.io", "validatingwebhookconfigurations")}


class ApiError(kmock.KubernetesError):
    """An error answered as a Kubernetes Status object."""


def _status_error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(status=code, reason=reason, message=message, details=details or {})


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return _status_error(404, "NotFound", f'{_qualified(rtype)} "{name}" not found',
                         {"name": name, "group": rtype.group, "kind": rtype.plural})


def _qualified(rtype: ResourceType) -> str:
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Route:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


@attrs.define(kw_only=True)
class EmulatedApiServer(kmock.KubernetesScaffold):
    """An emulated kube-apiserver. Serve it with ``kmock.Server(handler)`` or :func:`paybill.kube.serve`."""

    bookmark_interval: float = 5.0
    record_requests: bool = False
    store: Store = attrs.field(factory=Store)
    registry: Registry = attrs.field(factory=Registry)
    admission: Admission = attrs.field(factory=Admission)
    access: AccessControl = attrs.field(factory=AccessControl)
    _dependents: dict[str, set[tuple[tuple[str, str], str | None, str]]] = attrs.field(factory=dict, init=False)
    _lock: asyncio.Lock = attrs.field(factory=asyncio.Lock, init=False)
    _watches: set[asyncio.Task[Any]] = attrs.field(factory=set, init=False)

    def __attrs_post_init__(self) -> None:
        """No scaffold fallbacks: everything kmock's DSL does not intercept is served by ``_serve``."""

    async def __aexit__(self, *exc: Any) -> None:
        self.close_watches()
        await self.admission.close()
        await super().__aexit__(*exc)

    def close_watches(self) -> None:
        """End every open watch stream (clients see the stream close, as on an apiserver restart)."""
        for task in list(self._watches):
            task.cancel()

    # --- HTTP entry -------------------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = yaml.safe_load(body) if raw.content_type == APPLY else None
        request = rendering.Request(
            id=len(self._requests), raw_request=raw, url=raw.url, method=raw.method, params=dict(raw.query),
            headers=dict(raw.headers), cookies=dict(raw.cookies), data=data, body=body,
            text=body.decode(errors="replace"), **_kmock_intent(raw),
        )
        if self.record_requests or self._payloads:  # kmock's DSL selects among the recorded requests
            self._requests.append(request)
        try:
            return await self._handle(request)
        except (ApiError, Refused) as exc:
            return await self._render_error(exc)
        except rendering.StreamingError as exc:  # a watch that broke after its headers went out
            return exc.args[0]
        except Exception as exc:
            logger.exception("emulated API server failed on %s %s", raw.method, raw.path)
            return await self._render_error(_status_error(500, "InternalError", f"Internal error occurred: {exc}"))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self._payloads:  # reactions declared through kmock's DSL (fault injection in tests) come first
            try:
                return await super()._handle(request)
            except NotImplementedError:
                pass
        return await self._serve(request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            return aiohttp.web.json_response({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": exc.message, "reason": exc.reason, "details": exc.details or {}, "code": exc.status,
            }, status=exc.status)
        return await super()._render_error(exc)

    # --- routing ----------------------------------------------------------------------------------------------

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = _raw(request)
        path = raw.path.rstrip("/") or "/"
        method = raw.method
        self.access.admit(raw, self.store)  # authentication, impersonation, RBAC: 401/403 as kube-apiserver
        review = self.access.serve(raw, request.data, request.body, self.store)  # reviews and TokenRequest
        if review is not None:
            return self._json(review, status=201)
        fixed: dict[str, Callable[[], Any]] = {
            "/": lambda: {"paths": self._root_paths()},
            "/version": lambda: SERVER_VERSION,
            "/api": lambda: {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{raw.host}"}]},
            "/apis": self._api_groups,
            "/openapi/v3": lambda: openapi.v3_root(self.registry.groups()),
            "/healthz": lambda: "ok", "/livez": lambda: "ok", "/readyz": lambda: "ok",
        }
        if method == "GET" and path in fixed:
            payload = fixed[path]()
            return aiohttp.web.Response(text=payload) if isinstance(payload, str) else self._json(payload)
        if method == "GET" and path == "/openapi/v2":
            return self._openapi_v2(request)
        if method == "GET" and path.startswith("/openapi/v3/"):
            return self._openapi_v3(path.removeprefix("/openapi/v3/"))
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2 and method == "GET":
            return self._json(self._resource_list("", parts[1]))
        if parts[0] == "apis" and len(parts) in (2, 3) and method == "GET":
            return self._json(self._group(parts[1]) if len(parts) == 2 else self._resource_list(*parts[1:3]))
        route = self._route(parts)
        if route is None:
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        return await self._dispatch(request, route)

    def _route(self, parts: list[str]) -> Route | None:
        if parts[0] == "api" and len(parts) >= 3:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 4:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            return None
        namespace = None
        is_namespace_object = group == "" and rest[0] == "namespaces" and (
            len(rest) <= 2 or (len(rest) == 3 and rest[2] in ("status", "finalize")))
        if rest[0] == "namespaces" and not is_namespace_object:
            namespace, rest = rest[1], rest[2:]
        if not rest or len(rest) > 3:
            return None
        rtype = self.registry.get(group, version, rest[0])
        if rtype is None:
            return None
        if namespace is not None and not rtype.namespaced:
            return None
        name = rest[1] if len(rest) > 1 else None
        subresource = rest[2] if len(rest) > 2 else None
        if subresource not in (None, "status", "finalize") or (subresource == "status"
                                                               and not rtype.status_subresource):
            return None
        return Route(rtype, namespace, name, subresource)

    async def _dispatch(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        method, query = _raw(request).method, request.params
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch(request, route)
        if method == "GET" and route.name is None:
            return self._list(request, route)
        if method == "GET":
            return self._one(request, route)
        if request.data is None and method in ("POST", "PUT", "PATCH"):
            raise _status_error(400, "BadRequest", "the request body is not valid JSON")
        dry_run = _dry_run(method, query, request.data)
        async with self._lock:
            if method == "POST" and route.name is None:
                obj = await self._create(route, request.data, dry_run, query.get("fieldValidation"))
                return self._json(obj, status=201)
            if method == "PUT" and route.name:
                obj = await self._update(route, request.data, dry_run, query.get("fieldValidation"))
                return self._json(obj)
            if method == "PATCH" and route.name:
                content_type = _raw(request).content_type
                obj = await self._patch(route, content_type, request.data, dry_run, query.get("fieldValidation"))
                return self._json(obj)
            if method == "DELETE" and route.name:
                return self._json(await self._delete(route, request.data or {}, dry_run))
            if method == "DELETE":
                return self._json(await self._delete_collection(request, route, dry_run))
        raise _status_error(405, "MethodNotAllowed", f"method {method} is not supported here")

    # --- discovery and OpenAPI --------------------------------------------------------------------------------

    def _root_paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/version", "/openapi/v2", "/openapi/v3", "/healthz"}
        for group, versions in self.registry.groups().items():
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{version}" for version in versions)
        return sorted(paths)

    def _group(self, group: str) -> dict[str, Any]:
        versions = self.registry.groups().get(group)
        if not versions:
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": listed,
                "preferredVersion": listed[0]}

    def _api_groups(self) -> dict[str, Any]:
        return {"kind": "APIGroupList", "apiVersion": "v1",
                "groups": [self._group(group) for group in self.registry.groups()]}

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        rtypes = self.registry.in_version(group, version)
        if not rtypes:
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version,
                "resources": [entry for rtype in rtypes for entry in rtype.discovery()]}

    def _openapi_v2(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        accept = request.headers.get("Accept", "")
        if accept and "json" not in accept and "*/*" not in accept:
            raise _status_error(406, "NotAcceptable", "only application/json is served for /openapi/v2")
        return self._json(openapi.v2_document(self.registry.all()))

    def _openapi_v3(self, suffix: str) -> aiohttp.web.StreamResponse:
        parts = suffix.split("/")
        if parts[0] == "api" and len(parts) == 2:
            rtypes = self.registry.in_version("", parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            rtypes = self.registry.in_version(parts[1], parts[2])
        else:
            rtypes = []
        if not rtypes:
            raise _status_error(404, "NotFound", "the server could not find the requested resource")
        document = openapi.v3_document(rtypes)
        return self._json(document, headers={"Etag": f'"{openapi.etag(document)}"'})

    @staticmethod
    def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> aiohttp.web.Response:
        return aiohttp.web.Response(text=json.dumps(payload, separators=(",", ":")), status=status,
                                    content_type="application/json", headers=headers)

    # --- reads --------------------------------------------------------------------------------------------------

    def _get(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self.store.get(route.rtype.key, route.namespace, route.name)
        if obj is None:
            raise not_found(route.rtype, route.name)
        return self._served(route.rtype, obj)

    def _one(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        obj = self._get(route)
        include_object = _table_request(request)
        if include_object is None:
            return self._json(obj)
        return self._json(tables.table(route.rtype, [obj], obj["metadata"]["resourceVersion"], include_object))

    @staticmethod
    def _served(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the requested version presents it (the store keeps each as it was written)."""
        return conversion.served(rtype.api_version, obj)

    def _matcher(self, request: rendering.Request, route: Route) -> Callable[[dict[str, Any]], bool]:
        try:
            labels = parse_label_selector(request.params.get("labelSelector"))
            fields = parse_field_selector(request.params.get("fieldSelector"), field_labels(route.rtype))
        except SelectorError as exc:
            raise _status_error(400, "BadRequest", str(exc)) from None
        return lambda obj: labels(obj["metadata"].get("labels") or {}) and fields(self._served(route.rtype, obj))

    def _list(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        matches = self._matcher(request, route)
        items = [self._served(route.rtype, obj) for obj in self.store.list(route.rtype.key, route.namespace)
                 if matches(obj)]
        items.sort(key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
        revision = str(self.store.revision)
        include_object = _table_request(request)
        if include_object is not None:
            return self._json(tables.table(route.rtype, items, revision, include_object))
        return self._json({"kind": f"{route.rtype.kind}List", "apiVersion": route.rtype.api_version,
                           "metadata": {"resourceVersion": revision}, "items": items})

    async def _watch(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        params = request.params
        matches = self._matcher(request, route)
        if route.name:
            by_name = matches
            matches = lambda obj: by_name(obj) and obj["metadata"]["name"] == route.name  # noqa: E731
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        include_object = _table_request(request)
        key = route.rtype.key

        queue = self.store.subscribe(key)
        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)
        try:
            since = params.get("resourceVersion")
            if since and since != "0":
                try:
                    backlog = self.store.events_since(key, int(since))
                except (Expired, ValueError):
                    return await self._expired_stream(request, since)
            else:
                backlog = [_synthetic_added(obj) for obj in self.store.list(key, route.namespace)]
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(_raw(request))

            async def send(event_type: str, obj: dict[str, Any]) -> None:
                shown = self._served(route.rtype, obj)
                if include_object is not None and event_type != "BOOKMARK":
                    shown = tables.table(route.rtype, [shown], obj["metadata"]["resourceVersion"], include_object)
                await response.write(json.dumps({"type": event_type, "object": shown}).encode() + b"\n")

            seen = int(since) if since and since.isdigit() else 0
            for event in backlog:
                if self._in_scope(event.object, route) and matches(event.object):
                    await send(event.type, event.object)
                seen = max(seen, event.resource_version)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while deadline is None or loop.time() < deadline:
                wait = self.bookmark_interval
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=max(wait, 0))
                except TimeoutError:
                    if bookmarks:
                        await send("BOOKMARK", {"kind": route.rtype.kind, "apiVersion": route.rtype.api_version,
                                                "metadata": {"resourceVersion": str(self.store.revision)}})
                    continue
                if event.resource_version <= seen:
                    continue
                seen = event.resource_version
                if self._in_scope(event.object, route) and matches(event.object):
                    await send(event.type, event.object)
            await response.write_eof()
            return response
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        finally:
            self.store.unsubscribe(key, queue)
            self._watches.discard(task)  # type: ignore[arg-type]

    async def _expired_stream(self, request: rendering.Request, since: str) -> aiohttp.web.StreamResponse:
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(_raw(request))
        status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Expired",
                  "message": f"too old resource version: {since}", "code": 410}
        await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        await response.write_eof()
        return response

    @staticmethod
    def _in_scope(obj: dict[str, Any], route: Route) -> bool:
        return route.namespace is None or obj["metadata"].get("namespace") == route.namespace

    # --- writes -------------------------------------------------------------------------------------------------

    async def _create(self, route: Route, body: Any, dry_run: bool, field_validation: str | None) -> dict[str, Any]:
        rtype = route.rtype
        if not isinstance(body, dict):
            raise _status_error(400, "BadRequest", "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        if rtype.namespaced:
            namespace = route.namespace or meta.get("namespace")
            if meta.get("namespace") and route.namespace and meta["namespace"] != route.namespace:
                raise _status_error(400, "BadRequest", "the namespace of the provided object does not match "
                                                       "the namespace sent on the request")
            if not namespace:
                raise _status_error(400, "BadRequest", "a namespace is required for namespaced resources")
            self._require_live_namespace(namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        self._check_meta(rtype, obj)
        if self.store.get(rtype.key, meta.get("namespace"), name) is not None:
            raise _status_error(409, "AlreadyExists", f'{_qualified(rtype)} "{name}" already exists',
                                {"name": name, "group": rtype.group, "kind": rtype.plural})
        _stamp_new(rtype, obj)
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
            raise _status_error(404, "NotFound", f'namespaces "{namespace}" not found',
                                {"name": namespace, "kind": "namespaces"})
        if ns["metadata"].get("deletionTimestamp"):
            raise _status_error(403, "Forbidden", f"unable to create new content in namespace {namespace} "
                                                  "because it is being terminated")

    def _check_meta(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        name = meta.get("name") or ""
        errors = []
        pattern = DNS_LABEL if rtype.key == NAMESPACE_KEY else DNS_SUBDOMAIN
        if not name:
            errors.append(FieldError("FieldValueRequired", "metadata.name", "Required value: name or "
                                                                              "generateName is required"))
        elif not pattern.match(name) or len(name) > 253:
            errors.append(FieldError("FieldValueInvalid", "metadata.name",
                                     f'Invalid value: "{name}": a lowercase RFC 1123 '
                                     f'{"label" if pattern is DNS_LABEL else "subdomain"} must consist of lower '
                                     "case alphanumeric characters, '-' or '.'"))
        annotations = meta.get("annotations") or {}
        if sum(len(k) + len(str(v)) for k, v in annotations.items()) > MAX_ANNOTATIONS_BYTES:
            errors.append(FieldError("FieldValueTooLong", "metadata.annotations",
                                     f"Too long: must have at most {MAX_ANNOTATIONS_BYTES} bytes"))
        for key, value in (meta.get("labels") or {}).items():
            if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                errors.append(FieldError("FieldValueInvalid", f"metadata.labels[{key}]",
                                         f'Invalid value: "{value}": a valid label must be 63 characters or less, '
                                         "alphanumeric, '-', '_' or '.'"))
        if errors:
            raise self._invalid(rtype, name, errors)

    @staticmethod
    def _invalid(rtype: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
        kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
        summary = errors[0] if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
        return _status_error(422, "Invalid", f'{kind} "{name}" is invalid: {summary}',
                             {"name": name, "group": rtype.group, "kind": rtype.kind,
                              "causes": [e.cause() for e in errors]})

    async def _admit(self, route: Route, operation: str, obj: dict[str, Any], old: dict[str, Any] | None,
                     dry_run: bool, field_validation: str | None) -> dict[str, Any]:
        """Mutating webhooks, then schema pruning/defaulting/validation, then validating webhooks."""
        rtype = route.rtype
        self.access.check_escalation(rtype.key, obj, old, self.store)  # RBAC escalate/bind
        name = obj["metadata"]["name"]
        namespace = obj["metadata"].get("namespace")
        ns_obj = self.store.get(NAMESPACE_KEY, None, namespace) if namespace else None
        ns_labels = (ns_obj or {}).get("metadata", {}).get("labels") or {}
        request = AdmissionRequest(rtype, operation, name, namespace, route.subresource, obj, old, dry_run, ns_labels)
        try:
            mutated = await self.admission.review(self._webhooks("mutating"), request, mutating=True)
            assert mutated is not None
            obj = self._apply_schema(rtype, mutated, old, field_validation)
            await self.admission.review(self._webhooks("validating"),
                                        AdmissionRequest(**{**request.__dict__, "obj": obj}), mutating=False)
        except AdmissionDenied as denied:
            raise _status_error(denied.code, denied.reason, denied.message) from None
        return obj

    def _webhooks(self, kind: str) -> list[dict[str, Any]]:
        return self.store.list(WEBHOOK_KEYS[kind])

    def _apply_schema(self, rtype: ResourceType, obj: dict[str, Any], old: dict[str, Any] | None,
                      field_validation: str | None) -> dict[str, Any]:
        if rtype.schema is None:
            errors = validate_event(obj, creating=old is None) if rtype.kind == "Event" else []
            if errors:
                raise self._invalid(rtype, obj["metadata"].get("name", ""), errors)
            return obj
        meta = obj.pop("metadata")
        pruned, dropped = prune(obj, rtype.schema)
        if dropped and field_validation == "Strict":
            fields = ", ".join(f'unknown field "{path}"' for path in dropped)
            raise _status_error(400, "BadRequest", f"strict decoding error: {fields}")
        pruned = apply_defaults(pruned, rtype.schema)
        old_body = {k: v for k, v in (old or {}).items() if k != "metadata"} if old is not None else None
        errors = validate(pruned, rtype.schema, old_body) if old_body is not None else validate(pruned, rtype.schema)
        if errors:
            raise self._invalid(rtype, meta.get("name", ""), errors)
        return {"apiVersion": pruned.pop("apiVersion", rtype.api_version), "kind": pruned.pop("kind", rtype.kind),
                "metadata": meta, **pruned}

    async def _update(self, route: Route, body: Any, dry_run: bool, field_validation: str | None) -> dict[str, Any]:
        current = self._current(route)
        if not isinstance(body, dict):
            raise _status_error(400, "BadRequest", "the request body must be a JSON object")
        sent_version = (body.get("metadata") or {}).get("resourceVersion")
        if not sent_version and route.rtype.custom and route.subresource is None:
            raise self._invalid(route.rtype, route.name or "", [FieldError(
                "FieldValueInvalid", "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an "
                                                                 "update")])
        return await self._write(route, current, copy.deepcopy(body), dry_run, field_validation)

    async def _patch(self, route: Route, content_type: str, patch: Any, dry_run: bool,
                     field_validation: str | None) -> dict[str, Any]:
        current = self._current(route)
        if content_type == APPLY:
            raise _status_error(415, "UnsupportedMediaType", "server-side apply is not supported by the emulated "
                                                             "API server; use client-side apply")
        try:
            patched = apply_patch(content_type, current, patch)
        except PatchError as exc:
            code = 415 if "unsupported patch type" in str(exc) else 422
            raise _status_error(code, "UnsupportedMediaType" if code == 415 else "Invalid", str(exc)) from None
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

    async def _write(self, route: Route, current: dict[str, Any], new: dict[str, Any], dry_run: bool,
                     field_validation: str | None) -> dict[str, Any]:
        """Replace ``current`` by ``new`` with the apiserver's rules for the main resource and /status."""
        rtype = route.rtype
        meta = new.setdefault("metadata", {})
        old_meta = current["metadata"]
        sent_version = meta.get("resourceVersion")
        if sent_version and sent_version != old_meta["resourceVersion"]:
            raise _status_error(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(rtype)} '
                                                 f'"{route.name}": the object has been modified; please apply '
                                                 "your changes to the latest version and try again",
                                {"name": route.name, "group": rtype.group, "kind": rtype.plural})
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
            for kept in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                         "deletionGracePeriodSeconds", "generation"):
                if kept in old_meta:
                    meta[kept] = old_meta[kept]
                else:
                    meta.pop(kept, None)
            if old_meta.get("deletionTimestamp"):
                added = set(meta.get("finalizers") or []) - set(old_meta.get("finalizers") or [])
                if added:
                    raise self._invalid(rtype, route.name or "", [FieldError(
                        "FieldValueForbidden", "metadata.finalizers",
                        "Forbidden: no new finalizers can be added if the object is being deleted")])
            self._check_meta(rtype, obj)
        obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
        obj = await self._admit(route, "UPDATE", obj, current, dry_run, field_validation)
        if _spec_changed(current, obj):
            obj["metadata"]["generation"] = int(old_meta.get("generation", 1)) + 1
        if _unchanged(current, obj):
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
            raise _status_error(403, "Forbidden", f'namespaces "{route.name}" is forbidden: this namespace may not '
                                                  "be deleted", {"name": route.name, "kind": "namespaces"})
        current = self._current(route)
        preconditions = options.get("preconditions") or {}
        for field_name in ("uid", "resourceVersion"):
            if preconditions.get(field_name) and preconditions[field_name] != current["metadata"].get(field_name):
                raise _status_error(409, "Conflict", f"Precondition failed: {field_name} in precondition: "
                                                     f"{preconditions[field_name]}, {field_name} in object meta: "
                                                     f"{current['metadata'].get(field_name)}")
        await self._admit_delete(route, current, dry_run)
        if dry_run:
            return current
        return self._mark_or_remove(rtype, current)

    async def _admit_delete(self, route: Route, current: dict[str, Any], dry_run: bool) -> None:
        meta = current["metadata"]
        request = AdmissionRequest(route.rtype, "DELETE", meta["name"], meta.get("namespace"), None, None, current,
                                   dry_run, {})
        try:
            await self.admission.review(self._webhooks("validating"), request, mutating=False)
        except AdmissionDenied as denied:
            raise _status_error(denied.code, denied.reason, denied.message) from None

    def _mark_or_remove(self, rtype: ResourceType, current: dict[str, Any]) -> dict[str, Any]:
        if current["metadata"].get("deletionTimestamp"):
            return current
        if rtype.key == NAMESPACE_KEY or current["metadata"].get("finalizers"):
            obj = copy.deepcopy(current)
            obj["metadata"].update(deletionTimestamp=_now(), deletionGracePeriodSeconds=0,
                                   generation=int(obj["metadata"].get("generation", 1)) + 1)
            if rtype.key == NAMESPACE_KEY:
                obj["status"] = {"phase": "Terminating"}
            self._commit(rtype, obj, "MODIFIED")
            if rtype.key == NAMESPACE_KEY:
                self._terminate_namespace(obj)
            return self.store.get(rtype.key, obj["metadata"].get("namespace"), obj["metadata"]["name"]) or obj
        self._finalize(rtype, current)
        return current

    async def _delete_collection(self, request: rendering.Request, route: Route, dry_run: bool) -> dict[str, Any]:
        matches = self._matcher(request, route)
        deleted = []
        for obj in list(self.store.list(route.rtype.key, route.namespace)):
            if matches(obj):
                item_route = Route(route.rtype, obj["metadata"].get("namespace"), obj["metadata"]["name"], None)
                deleted.append(await self._delete(item_route, {}, dry_run))
        return {"kind": f"{route.rtype.kind}List", "apiVersion": route.rtype.api_version,
                "metadata": {"resourceVersion": str(self.store.revision)}, "items": deleted}

    # --- storage side effects --------------------------------------------------------------------------------

    def _commit(self, rtype: ResourceType, obj: dict[str, Any], event_type: str) -> None:
        obj["metadata"]["resourceVersion"] = str(self.store.next_revision())
        self._index_owners(rtype, obj)
        self.store.put(rtype.key, obj, event_type)

    def _index_owners(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        for ref in meta.get("ownerReferences") or []:
            self._dependents.setdefault(ref["uid"], set()).add((rtype.key, meta.get("namespace"), meta["name"]))

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

    def _accept_crd(self, crd: dict[str, Any]) -> None:
        try:
            self.registry.register_crd(crd)
        except (KeyError, TypeError) as exc:
            raise _status_error(422, "Invalid", f"CustomResourceDefinition is invalid: missing {exc}") from None
        names = crd["spec"]["names"]
        crd["status"] = {
            "acceptedNames": {k: names[k] for k in ("kind", "listKind", "plural", "singular", "shortNames",
                                                    "categories") if k in names},
            "storedVersions": [v["name"] for v in crd["spec"].get("versions", []) if v.get("storage")],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                 "message": "no conflicts found", "lastTransitionTime": _now()},
                {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted", "lastTransitionTime": _now()},
            ],
        }

    def load(self, manifests: list[dict[str, Any]]) -> None:
        """Seed objects synchronously (before serving), CRDs first."""
        for obj in sorted(manifests, key=lambda o: o.get("kind") != "CustomResourceDefinition"):
            group, _, version = obj["apiVersion"].rpartition("/")
            rtype = next(r for r in self.registry.all() if r.group == group and r.version == version
                         and r.kind == obj["kind"])
            obj = copy.deepcopy(obj)
            _stamp_new(rtype, obj)
            if rtype.key == CRD_KEY:
                self._accept_crd(obj)
            self._commit(rtype, obj, "ADDED")


def _stamp_new(rtype: ResourceType, obj: dict[str, Any]) -> None:
    """What the apiserver sets on every new object."""
    meta = obj.setdefault("metadata", {})
    obj["apiVersion"], obj["kind"] = rtype.api_version, rtype.kind
    for system_field in ("uid", "resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
        meta.pop(system_field, None)
    if rtype.status_subresource and rtype.custom:
        obj.pop("status", None)
    if rtype.key == NAMESPACE_KEY:
        obj["spec"] = {"finalizers": ["kubernetes"]}
        obj["status"] = {"phase": "Active"}
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    meta.update(uid=str(uuid.uuid4()), generation=1, creationTimestamp=_now())


def _dry_run(method: str, query: Mapping[str, str], body: Any) -> bool:
    """dryRun from the query string or, on DELETE, from the DeleteOptions body; only "All" is a valid value."""
    values = [query["dryRun"]] if "dryRun" in query else []
    if method == "DELETE" and isinstance(body, dict):
        values += body.get("dryRun") or []
    if any(value != "All" for value in values):
        sent = "[]string{" + ", ".join(json.dumps(value) for value in values) + "}"
        kind = OPTIONS_KINDS.get(method, "ListOptions")
        raise _status_error(422, "Invalid", f'{kind}.meta.k8s.io "" is invalid: dryRun: Unsupported value: {sent}: '
                                            'supported values: "All"', {"group": "meta.k8s.io", "kind": kind})
    return bool(values)


def _table_request(request: rendering.Request) -> str | None:
    """The includeObject of a request for a meta.k8s.io Table (as kubectl get asks), None for plain objects."""
    if "as=Table" not in request.headers.get("Accept", ""):
        return None
    include_object = request.params.get("includeObject") or "Metadata"
    if include_object not in tables.INCLUDE_OBJECT:
        raise _status_error(400, "BadRequest", f"unrecognized includeObject value: {json.dumps(include_object)}")
    return include_object


def _kmock_intent(raw: aiohttp.web.BaseRequest) -> dict[str, Any]:
    """kmock's reading of the URL, so its DSL can select by resource; its parser fails on some valid paths."""
    try:
        k8s = parsing.parse_path(raw.path)
        action = parsing.guess_k8s(k8s, enums.method(raw.method), dict(raw.query))
    except (ValueError, TypeError):
        return {"action": None, "resource": None, "namespace": None, "name": None, "subresource": None}
    resource = None if k8s.group is None else kmock.resource(group=k8s.group, version=k8s.version, plural=k8s.plural)
    return {"action": action, "resource": resource, "namespace": k8s.namespace, "name": k8s.name,
            "subresource": k8s.subresource}


def _raw(request: rendering.Request) -> aiohttp.web.BaseRequest:
    """The aiohttp request behind kmock's: every request the server routes has one."""
    raw = request._raw_request
    assert raw is not None
    return raw


def _synthetic_added(obj: dict[str, Any]) -> WatchEvent:
    return WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", obj)


def _body(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _spec_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return _body(old) != _body(new) or (bool(new["metadata"].get("deletionTimestamp"))
                                        and not old["metadata"].get("deletionTimestamp"))


def _unchanged(old: dict[str, Any], new: dict[str, Any]) -> bool:
    strip = lambda o: {**o, "metadata": {k: v for k, v in o["metadata"].items() if k != "resourceVersion"}}  # noqa: E731
    return strip(old) == strip(new)

