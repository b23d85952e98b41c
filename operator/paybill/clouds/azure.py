"""Azure through azure-mgmt-compute: virtual machines by the `paybill-tenant` tag (virtualMachines listAll with
statusOnly, every nextLink followed; the compute API filters no tags), the location's vCPU and VM usages,
deallocate/start as long-running operations polled to the end.

Credentials: ARM_SUBSCRIPTION_ID and ARM_ACCESS_TOKEN (a bearer token for https://management.azure.com, e.g.
from the operator's workload identity, refreshed by whoever writes the Secret) from the Plan's Secret. The SDK's
retries are off; RetryPolicy retries (see retry.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import SansIOHTTPPolicy
from azure.mgmt.compute import ComputeManagementClient

from . import tags
from .base import AdapterBase
from .model import Cloud, CloudError, CloudPlan, PowerState, Preflight, Resource, Verdict
from .retry import Failure, retry_after

CLOUD = Cloud.AZURE
_STATES = {
    "PowerState/running": PowerState.RUNNING,
    "PowerState/starting": PowerState.STARTING,
    "PowerState/deallocating": PowerState.STOPPING,
    "PowerState/deallocated": PowerState.STOPPED,
    # "PowerState/stopped" is powered off but still allocated (and billed): OTHER, so suspend deallocates it
}
_UNKNOWN_LOCATION = frozenset({"NoRegisteredProviderFound", "LocationNotAvailableForResourceType", "InvalidLocation"})
_QUOTAS = {"cores": "Total Regional vCPUs", "virtualMachines": "Virtual Machines"}


def _read(exc: Exception) -> Failure | None:
    if not isinstance(exc, HttpResponseError):
        return None
    code = getattr(exc.error, "code", None) or type(exc).__name__
    message = getattr(exc.error, "message", None) or exc.reason or ""
    headers = exc.response.headers if exc.response is not None else {}
    return Failure(exc.status_code, code, message, retry_after(headers.get("Retry-After")))


def _next_page(pages: Iterator[Iterator[Any]]) -> list[Any]:
    return list(next(pages))


class _StaticToken:
    """A bearer token as given (azure-identity is not needed for one)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        return AccessToken(self._token, int(time.time()) + 3600)


class _LoopbackHttp(SansIOHTTPPolicy):  # type: ignore[misc]
    """Lets the bearer token go over plain HTTP to a loopback endpoint (a test fake); never used otherwise."""

    def on_request(self, request: Any) -> None:
        request.context["enforce_https"] = False


def _loopback(endpoint: str | None) -> bool:
    return bool(endpoint) and endpoint.startswith(("http://127.0.0.1", "http://localhost"))  # type: ignore[union-attr]


class AzureAdapter(AdapterBase):
    cloud = CLOUD
    PAGE_SIZE = 0  # Azure chooses its pages
    PUBLIC_KEYS = frozenset({"ARM_SUBSCRIPTION_ID", "ARM_TENANT_ID", "ARM_CLIENT_ID"})
    _read = staticmethod(_read)

    def _connect(self, credentials: Mapping[str, str], endpoint: str | None) -> None:
        options: dict[str, Any] = {"retry_total": 0, "polling_interval": self.poll_seconds}
        if endpoint:
            options["base_url"] = endpoint
        if _loopback(endpoint):
            options["per_call_policies"] = [_LoopbackHttp()]
        self._client = ComputeManagementClient(
            _StaticToken(credentials.get("ARM_ACCESS_TOKEN", "")),
            credentials.get("ARM_SUBSCRIPTION_ID", ""),
            **options,
        )

    def _pages(self, paged: Callable[[], Any]) -> Iterator[list[Any]]:
        """Each page of an ItemPaged listing, one call each: the nextLink is kept, a retried page is that page."""
        token: str | None = None
        while True:
            pages = paged().by_page(continuation_token=token)
            items = self._call(partial(_next_page, pages))
            yield items
            token = pages.continuation_token
            if not token:
                return

    def preflight(self, plan: CloudPlan) -> Preflight:
        try:
            usages = [u for page in self._pages(partial(self._client.usage.list, plan.region)) for u in page]
        except CloudError as error:
            if error.status == 401:
                return Preflight(CLOUD, Verdict.INVALID_CREDENTIALS, f"credentials refused ({error.code})")
            if error.code in _UNKNOWN_LOCATION:
                return Preflight(CLOUD, Verdict.UNKNOWN_REGION, f"location {plan.region} refused ({error.code})")
            raise
        needed = {"cores": float(plan.instances * plan.vcpus), "virtualMachines": float(plan.instances)}
        quota = {
            u.name.value: (float(u.limit - u.current_value), needed[u.name.value])
            for u in usages
            if u.name.value in needed
        }
        short = [
            f"{_QUOTAS[name]} ({name}) {available:g} available, {want:g} needed"
            for name, (available, want) in quota.items()
            if available < want
        ]
        if short:
            return Preflight(CLOUD, Verdict.INSUFFICIENT_QUOTA, f"location {plan.region}: " + "; ".join(short), quota)
        return Preflight(CLOUD, Verdict.OK, f"credentials valid, location {plan.region} has the quota", quota)

    def _machines(self) -> list[Resource]:
        found = []
        listing = partial(self._client.virtual_machines.list_all, status_only="true")
        for page in self._pages(listing):
            for machine in page:
                if (machine.location or "").lower() != self.region.lower():
                    continue
                tenant, plan, cost_center = tags.read(CLOUD, machine.tags)
                if not tenant:
                    continue
                view = getattr(machine.properties, "instance_view", None)
                codes = [
                    s.code for s in getattr(view, "statuses", None) or [] if (s.code or "").startswith("PowerState/")
                ]
                state = _STATES.get(codes[0], PowerState.OTHER) if codes else PowerState.OTHER
                found.append(
                    Resource(CLOUD, "instance", machine.id, machine.name, state, tenant, plan, cost_center, self.region)
                )
        return found

    def inventory(self, tenant: str) -> list[Resource]:
        return [r for r in self._machines() if r.tenant == tenant]

    def _act(self, ids: tuple[str, ...], wanted: PowerState) -> None:
        operations = self._client.virtual_machines
        begin = operations.begin_deallocate if wanted is PowerState.STOPPED else operations.begin_start
        pollers = []
        for ident in ids:
            parts = ident.split("/")
            group, name = parts[parts.index("resourceGroups") + 1], parts[-1]
            pollers.append(self._call(partial(begin, group, name)))
        for poller in pollers:  # each polled (Azure-AsyncOperation) until Succeeded
            self._call(partial(poller.result, timeout=self.deadline_seconds))

    def _tagged(self) -> list[Resource]:
        return self._machines()
