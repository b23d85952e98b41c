"""Compute Engine's REST API (compute/v1), as google-cloud-compute's REST transport calls it: regions.get with
quotas, instances.aggregatedList with a label filter and pageToken, instances.stop/start returning a zone
Operation, zoneOperations.get until DONE; errors in Google's JSON error shape."""

from __future__ import annotations

import itertools
import re
from typing import Any

from .base import Answer, FakeCloud, Request, WrongRequest, expect, page, settle

PROJECT = "paybill-test"
TOKEN = "ya29.fake-access-token-0123456789"
REGIONS = {"us-central1": ("us-central1-a", "us-central1-b"), "europe-west1": ("europe-west1-b",)}
_STATUS = {"running": "RUNNING", "stopping": "STOPPING", "stopped": "TERMINATED", "starting": "STAGING"}
_FILTER = re.compile(r'^labels\.([a-z0-9_-]+) ?(=|:) ?"?([^"]*)"?$')


def error(status: int, reason: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    body = {
        "error": {
            "code": status,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
        }
    }
    return Answer(status, body, headers or {})


class FakeGcp(FakeCloud):
    def __init__(self) -> None:
        super().__init__()
        self.quotas = {"CPUS": (24.0, 0.0), "INSTANCES": (24.0, 0.0)}  # metric -> (limit, usage)
        self.operations: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)

    def route(self, request: Request) -> Answer:
        expect(request.headers.get("x-goog-api-client", "").find("gapic/") >= 0, "no x-goog-api-client header")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "authError", "Request had invalid authentication credentials.")
        parts = request.path.strip("/").split("/")
        expect(parts[:4] == ["compute", "v1", "projects", PROJECT], f"unexpected path {request.path}")
        rest = parts[4:]
        match rest, request.method:
            case ["regions", region], "GET":
                return self._region(region)
            case ["aggregated", "instances"], "GET":
                return self._aggregated(request)
            case ["zones", zone, "instances", name, ("stop" | "start") as action], "POST":
                return self._action(zone, name, action)
            case ["zones", zone, "operations", operation], "GET":
                return self._operation(zone, operation)
        raise WrongRequest(f"no route for {request.method} {request.path}")

    def _region(self, region: str) -> Answer:
        if region not in REGIONS:
            return error(404, "notFound", f"The resource 'projects/{PROJECT}/regions/{region}' was not found")
        quotas = [{"metric": m, "limit": limit, "usage": usage} for m, (limit, usage) in self.quotas.items()]
        return Answer(
            200,
            {
                "kind": "compute#region",
                "name": region,
                "status": "UP",
                "quotas": quotas,
                "zones": [
                    f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones/{z}" for z in REGIONS[region]
                ],
            },
        )

    def _aggregated(self, request: Request) -> Answer:
        size = int(request.param("maxResults") or 500)
        expect(1 <= size <= 500, "maxResults out of 1..500")
        match = _FILTER.match(request.param("filter"))
        expect(match is not None, f"unexpected filter {request.param('filter')!r}")
        assert match is not None
        key, op, value = match.groups()
        chosen = sorted(
            (i for i in self.instances.values() if key in i.tags and (op == ":" or i.tags[key] == value)),
            key=lambda i: i.id,
        )
        for instance in chosen:
            settle(instance)
        found, token = page(chosen, request.param("pageToken") or None, size)
        items: dict[str, Any] = {}
        for instance in found:
            items.setdefault(f"zones/{instance.region}", {"instances": []})["instances"].append(self._render(instance))
        body: dict[str, Any] = {
            "kind": "compute#instanceAggregatedList",
            "id": f"projects/{PROJECT}/aggregated/instances",
            "items": items,
        }
        if token:
            body["nextPageToken"] = token
        return Answer(200, body)

    def _render(self, instance: Any) -> dict[str, Any]:
        return {
            "kind": "compute#instance",
            "id": instance.id,
            "name": instance.name,
            "status": _STATUS[instance.state],
            "labels": instance.tags,
            "zone": f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones/{instance.region}",
        }

    def _action(self, zone: str, name: str, action: str) -> Answer:
        instance = next((i for i in self.instances.values() if i.name == name and i.region == zone), None)
        if instance is None:
            return error(
                404, "notFound", f"The resource 'projects/{PROJECT}/zones/{zone}/instances/{name}' was not found"
            )
        instance.state, instance.polls = ("stopping" if action == "stop" else "starting"), 0
        operation = f"operation-{next(self._ids)}"
        self.operations[operation] = {"instance": instance, "polls": 0}
        return Answer(200, self._operation_body(zone, operation, "RUNNING", action))

    def _operation(self, zone: str, operation: str) -> Answer:
        if operation not in self.operations:
            return error(
                404, "notFound", f"The resource 'projects/{PROJECT}/zones/{zone}/operations/{operation}' was not found"
            )
        state = self.operations[operation]
        settle(state["instance"])
        done = state["instance"].state in ("running", "stopped")
        return Answer(200, self._operation_body(zone, operation, "DONE" if done else "RUNNING", ""))

    def _operation_body(self, zone: str, operation: str, status: str, kind: str) -> dict[str, Any]:
        return {
            "kind": "compute#operation",
            "id": "1",
            "name": operation,
            "operationType": kind or "stop",
            "status": status,
            "zone": f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}",
            "selfLink": f"https://compute.googleapis.com/compute/v1/projects/{PROJECT}/zones/{zone}/operations/{operation}",
            "progress": 100 if status == "DONE" else 0,
        }
