"""Reading a request: the URL as a resource route, dryRun, a Table request, and kmock's own reading of the URL."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import kmock
from kmock._internal import enums, parsing, rendering

from . import tables
from .registry import Registry, ResourceType
from .replies import status_error

OPTIONS_KINDS = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions", "DELETE": "DeleteOptions"}


@dataclass(frozen=True)
class Route:
    rtype: ResourceType
    namespace: str | None
    name: str | None
    subresource: str | None


def resource_route(registry: Registry, parts: list[str]) -> Route | None:
    """The resource a path names, None when it names none."""
    if parts[0] == "api" and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis" and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    is_namespace_object = (
        group == ""
        and rest[0] == "namespaces"
        and (len(rest) <= 2 or (len(rest) == 3 and rest[2] in ("status", "finalize")))
    )
    if rest[0] == "namespaces" and not is_namespace_object:
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    rtype = registry.get(group, version, rest[0])
    if rtype is None:
        return None
    if namespace is not None and not rtype.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else None
    subresource = rest[2] if len(rest) > 2 else None
    if subresource not in (None, "status", "finalize") or (subresource == "status" and not rtype.status_subresource):
        return None
    return Route(rtype, namespace, name, subresource)


def requested_dry_run(method: str, query: Mapping[str, str], body: Any) -> bool:
    """dryRun from the query string or, on DELETE, from the DeleteOptions body; only "All" is a valid value."""
    values = [query["dryRun"]] if "dryRun" in query else []
    if method == "DELETE" and isinstance(body, dict):
        values += body.get("dryRun") or []
    if any(value != "All" for value in values):
        sent = "[]string{" + ", ".join(json.dumps(value) for value in values) + "}"
        kind = OPTIONS_KINDS.get(method, "ListOptions")
        raise status_error(
            422,
            "Invalid",
            f'{kind}.meta.k8s.io "" is invalid: dryRun: Unsupported value: {sent}: supported values: "All"',
            {"group": "meta.k8s.io", "kind": kind},
        )
    return bool(values)


def table_request(request: rendering.Request) -> str | None:
    """The includeObject of a request for a meta.k8s.io Table (as kubectl get asks), None for plain objects."""
    if "as=Table" not in request.headers.get("Accept", ""):
        return None
    include_object = request.params.get("includeObject") or "Metadata"
    if include_object not in tables.INCLUDE_OBJECT:
        raise status_error(400, "BadRequest", f"unrecognized includeObject value: {json.dumps(include_object)}")
    return include_object


def kmock_intent(raw: aiohttp.web.BaseRequest) -> dict[str, Any]:
    """kmock's reading of the URL, so its DSL can select by resource; its parser fails on some valid paths."""
    try:
        k8s = parsing.parse_path(raw.path)
        action = parsing.guess_k8s(k8s, enums.method(raw.method), dict(raw.query))
    except (ValueError, TypeError):
        return {"action": None, "resource": None, "namespace": None, "name": None, "subresource": None}
    resource = None if k8s.group is None else kmock.resource(group=k8s.group, version=k8s.version, plural=k8s.plural)
    return {
        "action": action,
        "resource": resource,
        "namespace": k8s.namespace,
        "name": k8s.name,
        "subresource": k8s.subresource,
    }


def raw_request(request: rendering.Request) -> aiohttp.web.BaseRequest:
    """The aiohttp request behind kmock's: every request the server routes has one."""
    raw = request._raw_request
    assert raw is not None
    return raw
