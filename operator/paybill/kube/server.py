"""The emulated Kubernetes API server: kmock's HTTP scaffold plus the apiserver behaviour Paybill relies on.

kmock 0.8 serves HTTP, records requests and lets tests inject reactions (faults, delays) with its DSL. Its
own ``KubernetesEmulator`` merges everything into the object and answers 500 for namespaced URLs, so this
subclass of ``KubernetesScaffold`` brings its own routing and storage: uid/resourceVersion/generation
stamping, optimistic concurrency, the status subresource, watch from a resourceVersion with bookmarks,
finalizers, namespace deletion, garbage collection by owner, CRD registration with schema validation and
defaulting, admission webhooks, dryRun, server-side printing and OpenAPI documents.

This module is the HTTP entry, the routing table and reads; each other concern is a module of its own:
``routing`` (the URL as a route), ``discovery`` (and OpenAPI), ``watch``, ``writes`` (and admission),
``stamping`` (metadata), ``finalizers`` (and garbage collection), ``replies`` (Status errors, JSON), ``store``
and ``persistence`` (objects, resourceVersions and, with a state directory, their snapshot and journal on disk),
``credentials`` (the CA and tokens kept there).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import aiohttp.web
import attrs
import kmock
import yaml
from kmock._internal import rendering

from . import openapi, protobuf, tables
from .access import AccessControl, Refused
from .admission import Admission
from .credentials import persistent_access
from .discovery import SERVER_VERSION, Discovery
from .patching import APPLY
from .registry import CRD_KEY, Registry
from .replies import ApiError, not_found, status_error
from .routing import Route, kmock_intent, raw_request, requested_dry_run, resource_route, table_request
from .stamping import stamp_new
from .store import Expired, Store
from .watch import Watching
from .writes import Writes

logger = logging.getLogger(__name__)


def _protobuf_object(content_type: str, body: bytes) -> dict[str, Any] | None:
    """A Secret or ConfigMap sent as protobuf (Helm stores its release records so), in its JSON form; None for
    anything else (reviews and token requests are read by the access gate)."""
    if content_type != protobuf.MEDIA_TYPE:
        return None
    try:
        return protobuf.object_from_protobuf(body)
    except (protobuf.ProtobufError, UnicodeDecodeError):
        return None


@attrs.define(kw_only=True)
class EmulatedApiServer(Writes, Watching, Discovery, kmock.KubernetesScaffold):
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
    _stopping: bool = attrs.field(default=False, init=False)

    def __attrs_post_init__(self) -> None:
        """No scaffold fallbacks: everything kmock's DSL does not intercept is served by ``_serve``. A store
        opened on a state directory brings its objects: their CRDs are served again, their owners indexed."""
        for key, obj in self.store.items():
            if key == CRD_KEY:
                self.registry.register_crd(obj)
            self._index_owners(key, obj)

    @classmethod
    def persistent(cls, state_dir: Path, **kwargs: Any) -> EmulatedApiServer:
        """A server whose objects and credentials live in ``state_dir`` (made 0700; refused if it is a link or
        writable by others): restarted on it, it serves what it held, and issues larger resourceVersions."""
        store = Store.open(state_dir)
        return cls(store=store, access=persistent_access(state_dir), **kwargs)

    async def __aexit__(self, *exc: Any) -> None:
        self.stop_serving()
        await self.admission.close()
        try:
            await self.store.sync()
        finally:
            self.store.close()
        await super().__aexit__(*exc)

    def close_watches(self) -> None:
        """End every open watch stream (clients see the stream close, as on an apiserver restart)."""
        for task in list(self._watches):
            task.cancel()

    def stop_serving(self) -> None:
        """Shutting down: end every watch and refuse new ones (a client reconnecting at once would otherwise
        hold a stream on a server that is going away, and wait on it until its own inactivity timeout)."""
        self._stopping = True
        self.close_watches()

    # --- HTTP entry -------------------------------------------------------------------------------------------

    async def __call__(self, raw: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        body = await raw.read()
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = yaml.safe_load(body) if raw.content_type == APPLY else _protobuf_object(raw.content_type, body)
        request = rendering.Request(
            id=len(self._requests),
            raw_request=raw,
            url=raw.url,
            method=raw.method,
            params=dict(raw.query),
            headers=dict(raw.headers),
            cookies=dict(raw.cookies),
            data=data,
            body=body,
            text=body.decode(errors="replace"),
            **kmock_intent(raw),
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
            return await self._render_error(status_error(500, "InternalError", f"Internal error occurred: {exc}"))

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if self._payloads:  # reactions declared through kmock's DSL (fault injection in tests) come first
            try:
                return await super()._handle(request)
            except NotImplementedError:
                pass
        return await self._serve(request)

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, kmock.KubernetesError):
            return aiohttp.web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Failure",
                    "message": exc.message,
                    "reason": exc.reason,
                    "details": exc.details or {},
                    "code": exc.status,
                },
                status=exc.status,
            )
        return await super()._render_error(exc)

    # --- routing ----------------------------------------------------------------------------------------------

    async def _serve(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        raw = raw_request(request)
        path = raw.path.rstrip("/") or "/"
        method = raw.method
        self.access.admit(raw, self.store)  # authentication, impersonation, RBAC: 401/403 as kube-apiserver
        review = self.access.serve(raw, request.data, request.body, self.store)  # reviews and TokenRequest
        if review is not None:
            return self._json(review, status=201)
        fixed: dict[str, Callable[[], Any]] = {
            "/": lambda: {"paths": self._root_paths()},
            "/version": lambda: SERVER_VERSION,
            "/api": lambda: {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{raw.host}"}],
            },
            "/apis": self._api_groups,
            "/openapi/v3": lambda: openapi.v3_root(self.registry.groups()),
            "/healthz": lambda: "ok",
            "/livez": lambda: "ok",
            "/readyz": lambda: "ok",
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
        route = resource_route(self.registry, parts)
        if route is None:
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        return await self._dispatch(request, route)

    async def _dispatch(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        method, query = raw_request(request).method, request.params
        if method == "GET" and query.get("watch") in ("true", "1"):
            return await self._watch(request, route)
        if method == "GET" and route.name is None:
            return self._list(request, route)
        if method == "GET":
            return self._one(request, route)
        if request.data is None and method in ("POST", "PUT", "PATCH"):
            raise status_error(400, "BadRequest", "the request body is not valid JSON")
        async with self._lock:
            response = await self._serve_write(request, route)
        await self.store.sync()  # answered once on disk (several writes share one fsync)
        return response

    async def _serve_write(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        method, query = raw_request(request).method, request.params
        dry_run = requested_dry_run(method, query, request.data)
        if method == "POST" and route.name is None:
            obj = await self._create(route, request.data, dry_run, query.get("fieldValidation"))
            return self._json(obj, status=201)
        if method == "PUT" and route.name:
            obj = await self._update(route, request.data, dry_run, query.get("fieldValidation"))
            return self._json(obj)
        if method == "PATCH" and route.name:
            content_type = raw_request(request).content_type
            obj = await self._patch(route, content_type, request.data, dry_run, query.get("fieldValidation"))
            return self._json(obj)
        if method == "DELETE" and route.name:
            return self._json(await self._delete(route, request.data or {}, dry_run))
        if method == "DELETE":
            return self._json(await self._delete_collection(request, route, dry_run))
        raise status_error(405, "MethodNotAllowed", f"method {method} is not supported here")

    # --- reads --------------------------------------------------------------------------------------------------

    def _get(self, route: Route) -> dict[str, Any]:
        assert route.name is not None
        obj = self.store.get(route.rtype.key, route.namespace, route.name)
        if obj is None:
            raise not_found(route.rtype, route.name)
        return self._served(route.rtype, obj)

    def _one(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        obj = self._get(route)
        include_object = table_request(request)
        if include_object is None:
            return self._json(obj)
        return self._json(tables.table(route.rtype, [obj], obj["metadata"]["resourceVersion"], include_object))

    def _list(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        self._require_listable_version(request.params)
        matches = self._matcher(request, route)
        items = [
            self._served(route.rtype, obj) for obj in self.store.list(route.rtype.key, route.namespace) if matches(obj)
        ]
        items.sort(key=lambda obj: (obj["metadata"].get("namespace") or "", obj["metadata"]["name"]))
        revision = str(self.store.revision)
        include_object = table_request(request)
        if include_object is not None:
            return self._json(tables.table(route.rtype, items, revision, include_object))
        return self._json(
            {
                "kind": f"{route.rtype.kind}List",
                "apiVersion": route.rtype.api_version,
                "metadata": {"resourceVersion": revision},
                "items": items,
            }
        )

    def _require_listable_version(self, params: Mapping[str, str]) -> None:
        """A list is served at the current revision: for resourceVersion unset or "0" (any), or one not newer
        (NotOlderThan, the default). A version this server never issued (ahead of it, after its storage was
        reset) or an Exact one that is not the current (history is not kept for lists) is 410, as kube-apiserver
        answers a version compacted away, so that clients relist from scratch instead of waiting."""
        requested = params.get("resourceVersion") or "0"
        if requested == "0":
            return
        if not requested.isdigit():
            raise status_error(400, "BadRequest", f"invalid resource version: {requested}")
        version = int(requested)
        try:
            self.store.require_issued(version)
        except Expired as expired:
            raise status_error(410, "Expired", str(expired)) from None
        if params.get("resourceVersionMatch") == "Exact" and version != self.store.revision:
            raise status_error(410, "Expired", f"too old resource version: {version} ({self.store.revision})")

    def load(self, manifests: list[dict[str, Any]]) -> None:
        """Seed objects synchronously (before serving), CRDs first; one that exists already (a server restarted
        on its state directory) is kept as it is, as kube-apiserver keeps its bootstrap objects."""
        for obj in sorted(manifests, key=lambda o: o.get("kind") != "CustomResourceDefinition"):
            group, _, version = obj["apiVersion"].rpartition("/")
            rtype = next(
                r for r in self.registry.all() if r.group == group and r.version == version and r.kind == obj["kind"]
            )
            meta = obj.get("metadata", {})
            if self.store.get(rtype.key, meta.get("namespace"), meta.get("name", "")) is not None:
                continue
            obj = copy.deepcopy(obj)
            stamp_new(rtype, obj)
            if rtype.key == CRD_KEY:
                self._accept_crd(obj)
            self._commit(rtype, obj, "ADDED")
