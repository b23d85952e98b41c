"""Oracle Cloud through the oci SDK: instances by the `paybill-tenant` freeform tag (Resource Search, filtered by
the service, `page` followed), region subscriptions and the compute core limit per availability domain for
preflight, SOFTSTOP/START instance actions polled until the instance reaches its state.

Credentials: OCI_TENANCY_OCID, OCI_USER_OCID, OCI_FINGERPRINT and OCI_PRIVATE_KEY (the API key's PEM) from the
Plan's Secret; requests are signed by the SDK. Its retries are off; RetryPolicy retries (see retry.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from typing import Any

import oci

from . import tags
from .base import AdapterBase
from .model import Cloud, CloudError, CloudPlan, PowerState, Preflight, Resource, Verdict
from .power import wait_for_state
from .retry import Failure, retry_after

CLOUD = Cloud.OCI
CORE_LIMIT = ("compute", "standard-e4-core-count")  # the E4 Flex OCPUs the modules' instances use, per AD
_STATES = {
    "PROVISIONING": PowerState.STARTING,
    "STARTING": PowerState.STARTING,
    "RUNNING": PowerState.RUNNING,
    "STOPPING": PowerState.STOPPING,
    "STOPPED": PowerState.STOPPED,
    "TERMINATING": PowerState.TERMINATED,
    "TERMINATED": PowerState.TERMINATED,
}


def _read(exc: Exception) -> Failure | None:
    if isinstance(exc, oci.exceptions.ServiceError):
        headers = exc.headers or {}
        return Failure(
            exc.status, exc.code or "ServiceError", exc.message or "", retry_after(headers.get("retry-after"))
        )
    if isinstance(exc, oci.exceptions.RequestException | oci.exceptions.ClientError):
        return Failure(None, type(exc).__name__, "request failed before the service answered")
    return None


class OciAdapter(AdapterBase):
    cloud = CLOUD
    PUBLIC_KEYS = frozenset({"OCI_TENANCY_OCID", "OCI_USER_OCID", "OCI_COMPARTMENT_OCID"})
    _read = staticmethod(_read)

    def _connect(self, credentials: Mapping[str, str], endpoint: str | None) -> None:
        self.tenancy = credentials.get("OCI_TENANCY_OCID", "")
        config = {
            "tenancy": self.tenancy,
            "user": credentials.get("OCI_USER_OCID", ""),
            "fingerprint": credentials.get("OCI_FINGERPRINT", ""),
            "key_content": credentials.get("OCI_PRIVATE_KEY", ""),
            "region": self.region,
        }
        options: dict[str, Any] = {"retry_strategy": oci.retry.NoneRetryStrategy()}
        if endpoint:
            options["service_endpoint"] = endpoint
        self._identity = oci.identity.IdentityClient(config, **options)
        self._limits = oci.limits.LimitsClient(config, **options)
        self._search = oci.resource_search.ResourceSearchClient(config, **options)
        self._compute = oci.core.ComputeClient(config, **options)

    def preflight(self, plan: CloudPlan) -> Preflight:
        try:
            subscribed = self._call(partial(self._identity.list_region_subscriptions, self.tenancy)).data
        except CloudError as error:
            if error.status == 401:
                return Preflight(CLOUD, Verdict.INVALID_CREDENTIALS, f"credentials refused ({error.code})")
            raise
        if plan.region not in {r.region_name for r in subscribed}:
            return Preflight(CLOUD, Verdict.UNKNOWN_REGION, f"region {plan.region} is not subscribed by the tenancy")
        if plan.instances == 0:
            return Preflight(CLOUD, Verdict.OK, f"credentials valid, region {plan.region} subscribed")
        domains = self._call(partial(self._identity.list_availability_domains, self.tenancy)).data
        available = max(
            (self._core_availability(domain.name) for domain in domains),
            default=0.0,
        )
        needed = float(plan.instances * max(1, plan.vcpus // 2))  # an OCPU is two vCPUs
        quota = {CORE_LIMIT[1]: (available, needed)}
        if available < needed:
            return Preflight(
                CLOUD,
                Verdict.INSUFFICIENT_QUOTA,
                f"{CORE_LIMIT[1]}: {available:g} available in the best availability domain, {needed:g} needed",
                quota,
            )
        return Preflight(
            CLOUD, Verdict.OK, f"credentials valid, region {plan.region} subscribed, cores available", quota
        )

    def _core_availability(self, domain: str) -> float:
        found = self._call(
            partial(
                self._limits.get_resource_availability,
                CORE_LIMIT[0],
                CORE_LIMIT[1],
                self.tenancy,
                availability_domain=domain,
            )
        ).data
        return float(found.available or 0)

    def _pages(self, query: str) -> Iterator[list[Any]]:
        details = oci.resource_search.models.StructuredSearchDetails(
            type="Structured", query=query, matching_context_type="NONE"
        )
        page: str | None = None
        while True:
            kwargs: dict[str, Any] = {"limit": self.page_size, **({"page": page} if page else {})}
            response = self._call(partial(self._search.search_resources, details, **kwargs))
            yield response.data.items
            page = response.next_page
            if not page:
                return

    def _found(self, query: str) -> list[Resource]:
        found = []
        for items in self._pages(query):
            for item in items:
                tenant, plan, cost_center = tags.read(CLOUD, item.freeform_tags)
                state = _STATES.get(item.lifecycle_state or "", PowerState.OTHER)
                found.append(
                    Resource(
                        CLOUD,
                        "instance",
                        item.identifier,
                        item.display_name,
                        state,
                        tenant,
                        plan,
                        cost_center,
                        self.region,
                    )
                )
        return found

    def inventory(self, tenant: str) -> list[Resource]:
        """The search's answer, kept to the instances whose own tag names the tenant (the index may answer more)."""
        key = tags.tenant_key(CLOUD)
        found = self._found(
            f"query instance resources where (freeformTags.key = '{key}' && freeformTags.value = '{_quoted(tenant)}')"
        )
        return [r for r in found if r.tenant == tenant]

    def _state(self, ident: str) -> PowerState:
        try:
            instance = self._call(partial(self._compute.get_instance, ident)).data
        except CloudError as error:
            if error.status == 404:
                return PowerState.TERMINATED
            raise
        return _STATES.get(instance.lifecycle_state, PowerState.OTHER)

    def _power_targets(self, tenant: str) -> list[Resource]:
        # Search answers from an index that may lag: each instance's state is read from Compute itself
        instances = [r for r in self.inventory(tenant) if r.state is not PowerState.TERMINATED]
        return [Resource(CLOUD, r.kind, r.id, r.name, self._state(r.id), r.tenant) for r in instances]

    def _act(self, ids: tuple[str, ...], wanted: PowerState) -> None:
        action = "SOFTSTOP" if wanted is PowerState.STOPPED else "START"
        for ident in ids:
            self._call(partial(self._compute.instance_action, ident, action))
        wait_for_state(lambda: [self._state(i) for i in ids], wanted, self.poll_seconds, self.deadline_seconds)

    def _tagged(self) -> list[Resource]:
        return self._found(f"query instance resources where freeformTags.key = '{tags.tenant_key(CLOUD)}'")


def _quoted(value: str) -> str:
    """A value inside the search language's single quotes (a tenant name is a DNS label; this is belt and braces)."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
