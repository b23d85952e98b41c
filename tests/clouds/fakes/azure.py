"""Azure Resource Manager's compute API as azure-mgmt-compute calls it: location usages, virtualMachines listAll
with statusOnly and nextLink pages, deallocate/start answered 202 with Azure-AsyncOperation and Location, the
operation polled to Succeeded; ARM's JSON error shape."""

from __future__ import annotations

import itertools
from typing import Any

from .base import Answer, FakeCloud, Instance, Request, WrongRequest, expect, page, settle

SUBSCRIPTION = "00000000-0000-4000-8000-00000000c0de"
TOKEN = "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.fake-arm-token"
API_VERSION = "2026-04-01"
LOCATIONS = ("westeurope", "eastus")
_POWER = {
    "running": "PowerState/running",
    "stopping": "PowerState/deallocating",
    "stopped": "PowerState/deallocated",
    "starting": "PowerState/starting",
}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"error": {"code": code, "message": message}}, headers or {})


def machine_id(group: str, name: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION}/resourceGroups/{group}/providers/Microsoft.Compute/virtualMachines/{name}"


class FakeAzure(FakeCloud):
    def __init__(self) -> None:
        super().__init__()
        self.usages = {"cores": (100, 0), "virtualMachines": (25000, 0)}  # name -> (limit, currentValue)
        self.operations: dict[str, Instance] = {}
        self._ids = itertools.count(1)
        self.page_size = 7

    def route(self, request: Request) -> Answer:
        expect(request.param("api-version") == API_VERSION, f"api-version {request.param('api-version')!r}")
        expect(request.headers.get("user-agent", "").find("azsdk-python-mgmt-compute") >= 0, "no SDK user agent")
        expect("x-ms-client-request-id" in request.headers, "no x-ms-client-request-id")
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return error(401, "InvalidAuthenticationToken", "The access token is invalid.")
        parts = request.path.strip("/").split("/")
        expect(parts[:2] == ["subscriptions", SUBSCRIPTION], f"unexpected path {request.path}")
        match parts[2:], request.method:
            case ["providers", "Microsoft.Compute", "locations", location, "usages"], "GET":
                return self._usages(location)
            case ["providers", "Microsoft.Compute", "virtualMachines"], "GET":
                expect(request.param("statusOnly") == "true", "listAll without statusOnly=true")
                return self._list(request)
            case ["resourceGroups", group, "providers", "Microsoft.Compute", "virtualMachines", name, action], "POST":
                expect(action in ("deallocate", "start"), f"unexpected action {action}")
                return self._action(machine_id(group, name), action)
            case ["providers", "Microsoft.Compute", "locations", _, "operations", operation], "GET":
                return self._operation(operation, request.param("monitor") == "true")
        raise WrongRequest(f"no route for {request.method} {request.path}")

    def _usages(self, location: str) -> Answer:
        if location not in LOCATIONS:
            return error(
                400,
                "NoRegisteredProviderFound",
                f"No registered resource provider found for location '{location}' and API version '{API_VERSION}' "
                "for type 'locations/usages'.",
            )
        value = [
            {"unit": "Count", "currentValue": current, "limit": limit, "name": {"value": name, "localizedValue": name}}
            for name, (limit, current) in self.usages.items()
        ]
        return Answer(200, {"value": value})

    def _list(self, request: Request) -> Answer:
        machines = sorted(self.instances.values(), key=lambda i: i.id)
        for machine in machines:
            settle(machine)
        found, token = page(machines, request.param("$skipToken") or None, self.page_size)
        body: dict[str, Any] = {"value": [self._render(m) for m in found]}
        if token:
            body["nextLink"] = (
                f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines"
                f"?api-version={API_VERSION}&statusOnly=true&$skipToken={token}"
            )
        return Answer(200, body)

    def _render(self, machine: Instance) -> dict[str, Any]:
        statuses = [
            {"code": "ProvisioningState/succeeded", "level": "Info"},
            {"code": _POWER[machine.state], "level": "Info"},
        ]
        return {
            "id": machine.id,
            "name": machine.name,
            "type": "Microsoft.Compute/virtualMachines",
            "location": machine.region,
            "tags": machine.tags,
            "properties": {"vmId": f"vm-{machine.name}", "instanceView": {"statuses": statuses}},
        }

    def _action(self, ident: str, action: str) -> Answer:
        machine = self.instances.get(ident)
        if machine is None:
            return error(404, "ResourceNotFound", f"The Resource '{ident}' was not found.")
        machine.state, machine.polls = ("stopping" if action == "deallocate" else "starting"), 0
        operation = f"op-{next(self._ids):04d}"
        self.operations[operation] = machine
        base = (
            f"{self.url}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Compute/locations/{machine.region}"
            f"/operations/{operation}"
        )
        return Answer(
            202,
            None,
            {
                "Azure-AsyncOperation": f"{base}?api-version={API_VERSION}",
                "Location": f"{base}?monitor=true&api-version={API_VERSION}",
            },
        )

    def _operation(self, operation: str, monitor: bool) -> Answer:
        machine = self.operations.get(operation)
        if machine is None:
            return error(404, "OperationNotFound", f"operation {operation} not found")
        settle(machine)
        done = machine.state in ("running", "stopped")
        if monitor:
            return Answer(200 if done else 202, None)
        return Answer(200, {"name": operation, "status": "Succeeded" if done else "InProgress"})
