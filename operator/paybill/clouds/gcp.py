"""Google Cloud through google-cloud-compute (REST transport): instances by the `paybill-tenant` label
(aggregatedList, filtered by the API), the region's CPUS and INSTANCES quotas, stop/start as zone operations.

Credentials: GOOGLE_PROJECT and GOOGLE_OAUTH_ACCESS_TOKEN (or GOOGLE_CREDENTIALS, a service account's JSON key)
from the Plan's Secret. The SDK's retries are off; RetryPolicy retries (see retry.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

from google.api_core import exceptions as google_errors
from google.api_core.client_options import ClientOptions
from google.auth import exceptions as google_auth_errors
from google.cloud import compute_v1
from google.oauth2 import credentials as oauth2
from google.oauth2 import service_account

from . import tags
from .base import AdapterBase
from .model import Cloud, CloudError, CloudPlan, PowerState, Preflight, Resource, Verdict
from .retry import Failure, retry_after

CLOUD = Cloud.GCP
SCOPE = "https://www.googleapis.com/auth/compute"
_STATES = {
    "PROVISIONING": PowerState.STARTING,
    "STAGING": PowerState.STARTING,
    "RUNNING": PowerState.RUNNING,
    "STOPPING": PowerState.STOPPING,
    "SUSPENDING": PowerState.STOPPING,
    "SUSPENDED": PowerState.STOPPED,
    "TERMINATED": PowerState.STOPPED,  # Compute Engine's word for a stopped instance
}


def _read(exc: Exception) -> Failure | None:
    if isinstance(exc, google_auth_errors.RefreshError):  # a 401 the static token cannot recover from
        return Failure(401, "UNAUTHENTICATED", "the access token was refused and cannot be refreshed")
    if not isinstance(exc, google_errors.GoogleAPICallError):
        return None
    reason = next((e.get("reason") for e in exc.errors or [] if isinstance(e, dict) and e.get("reason")), None)
    headers = getattr(exc.response, "headers", None) or {}
    status = exc.code if isinstance(exc.code, int) else None
    return Failure(status, reason or type(exc).__name__, exc.message or "", retry_after(headers.get("Retry-After")))


def _credentials(secret: Mapping[str, str]) -> Any:
    if secret.get("GOOGLE_CREDENTIALS"):
        info = json.loads(secret["GOOGLE_CREDENTIALS"])
        return service_account.Credentials.from_service_account_info(info, scopes=[SCOPE])
    return oauth2.Credentials(token=secret.get("GOOGLE_OAUTH_ACCESS_TOKEN"))


class GcpAdapter(AdapterBase):
    cloud = CLOUD
    POLL_SECONDS, DEADLINE_SECONDS, PAGE_SIZE = 2.0, 600.0, 500
    PUBLIC_KEYS = frozenset({"GOOGLE_PROJECT"})
    _read = staticmethod(_read)

    def _connect(self, credentials: Mapping[str, str], endpoint: str | None) -> None:
        self.project = credentials.get("GOOGLE_PROJECT", "")
        options = ClientOptions(api_endpoint=endpoint) if endpoint else None
        kwargs: dict[str, Any] = {
            "credentials": _credentials(credentials),
            "transport": "rest",
            "client_options": options,
        }
        self._instances = compute_v1.InstancesClient(**kwargs)
        self._regions = compute_v1.RegionsClient(**kwargs)
        self._operations = compute_v1.ZoneOperationsClient(**kwargs)

    def preflight(self, plan: CloudPlan) -> Preflight:
        try:
            region = self._call(lambda: self._regions.get(project=self.project, region=plan.region, retry=None))
        except CloudError as error:
            if error.status == 401:
                return Preflight(CLOUD, Verdict.INVALID_CREDENTIALS, f"credentials refused ({error.code})")
            if error.status == 404:
                return Preflight(CLOUD, Verdict.UNKNOWN_REGION, f"region {plan.region} not found ({error.code})")
            raise
        needed = {"CPUS": float(plan.instances * plan.vcpus), "INSTANCES": float(plan.instances)}
        quota = {q.metric: (q.limit - q.usage, needed[q.metric]) for q in region.quotas if q.metric in needed}
        short = [
            f"{metric} {available:g} available, {want:g} needed"
            for metric, (available, want) in quota.items()
            if available < want
        ]
        if short:
            return Preflight(
                CLOUD, Verdict.INSUFFICIENT_QUOTA, f"region {plan.region} quota: " + "; ".join(short), quota
            )
        return Preflight(CLOUD, Verdict.OK, f"credentials valid, region {plan.region} is {region.status}", quota)

    def _pages(self, label_filter: str) -> Iterator[Any]:
        """Each page of instances.aggregatedList, one call each (a retried page is that page again)."""
        token = ""
        while True:
            request = compute_v1.AggregatedListInstancesRequest(
                project=self.project, filter=label_filter, max_results=self.page_size, page_token=token
            )
            page = self._call(partial(self._first_page, request))
            yield page
            token = page.next_page_token
            if not token:
                return

    def _first_page(self, request: Any) -> Any:
        return next(iter(self._instances.aggregated_list(request=request, retry=None).pages))

    def _listed(self, label_filter: str) -> list[Resource]:
        found = []
        for page in self._pages(label_filter):
            for scope, listed in page.items.items():
                zone = scope.removeprefix("zones/")
                if not zone.startswith(f"{self.region}-"):
                    continue
                for instance in listed.instances:
                    tenant, plan, cost_center = tags.read(CLOUD, dict(instance.labels))
                    state = _STATES.get(instance.status, PowerState.OTHER)
                    found.append(
                        Resource(
                            CLOUD,
                            "instance",
                            f"{zone}/{instance.name}",
                            instance.name,
                            state,
                            tenant,
                            plan,
                            cost_center,
                            zone,
                        )
                    )
        return found

    def inventory(self, tenant: str) -> list[Resource]:
        """The filtered list, kept to the instances whose own label names the tenant (never trust a filter alone)."""
        found = self._listed(f'labels.{tags.tenant_key(CLOUD)} = "{tenant.lower()}"')
        return [r for r in found if r.tenant == tenant.lower()]

    def _act(self, ids: tuple[str, ...], wanted: PowerState) -> None:
        act = self._instances.stop if wanted is PowerState.STOPPED else self._instances.start
        operations = []
        for ident in ids:
            zone, name = ident.split("/", 1)
            operations.append(self._call(partial(act, project=self.project, zone=zone, instance=name, retry=None)))
        for ident, operation in zip(ids, operations, strict=True):
            self._wait(ident.split("/", 1)[0], operation.name)

    def _wait(self, zone: str, name: str) -> None:
        """Poll zoneOperations.get until the operation is DONE (the SDK's own poller ignores api_endpoint)."""
        deadline = time.monotonic() + self.deadline_seconds
        while True:
            operation = self._call(
                lambda: self._operations.get(project=self.project, zone=zone, operation=name, retry=None)
            )
            if operation.status == compute_v1.Operation.Status.DONE:
                if operation.error and operation.error.errors:
                    first = operation.error.errors[0]
                    raise CloudError(CLOUD, first.code, first.message)
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"operation {name} not done after {self.deadline_seconds:g} s")
            time.sleep(self.poll_seconds)

    def _tagged(self) -> list[Resource]:
        return self._listed(f"labels.{tags.tenant_key(CLOUD)}:*")
