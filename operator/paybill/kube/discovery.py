"""Discovery and OpenAPI: /api, /apis, the resource lists kubectl caches, and the OpenAPI v2/v3 documents."""

from __future__ import annotations

from typing import Any

import aiohttp.web
from kmock._internal import rendering

from . import openapi
from .registry import Registry
from .replies import Replies, status_error

SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0-paybill-emulated",
    "gitCommit": "emulated",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22",
    "compiler": "gc",
    "platform": "linux/amd64",
}


class Discovery(Replies):
    """Discovery documents and OpenAPI of the registered resource types (a mixin of EmulatedApiServer)."""

    registry: Registry

    def _root_paths(self) -> list[str]:
        paths = {"/api", "/api/v1", "/apis", "/version", "/openapi/v2", "/openapi/v3", "/healthz"}
        for group, versions in self.registry.groups().items():
            paths.add(f"/apis/{group}")
            paths.update(f"/apis/{group}/{version}" for version in versions)
        return sorted(paths)

    def _group(self, group: str) -> dict[str, Any]:
        versions = self.registry.groups().get(group)
        if not versions:
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {
            "kind": "APIGroup",
            "apiVersion": "v1",
            "name": group,
            "versions": listed,
            "preferredVersion": listed[0],
        }

    def _api_groups(self) -> dict[str, Any]:
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [self._group(group) for group in self.registry.groups()],
        }

    def _resource_list(self, group: str, version: str) -> dict[str, Any]:
        rtypes = self.registry.in_version(group, version)
        if not rtypes:
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for rtype in rtypes for entry in rtype.discovery()],
        }

    def _openapi_v2(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        accept = request.headers.get("Accept", "")
        if accept and "json" not in accept and "*/*" not in accept:
            raise status_error(406, "NotAcceptable", "only application/json is served for /openapi/v2")
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
            raise status_error(404, "NotFound", "the server could not find the requested resource")
        document = openapi.v3_document(rtypes)
        return self._json(document, headers={"Etag": f'"{openapi.etag(document)}"'})
