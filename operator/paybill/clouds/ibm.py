"""IBM Cloud through ibm-vpc (and its SDK core for Global Search): instances by the "paybill-tenant:<id>" user tag
(VPC instance objects carry no user tags: Global Search finds them by tag, search_cursor followed), each one's
status from the VPC API; stop/start instance actions polled until the instance reaches its state.

Credentials: IC_API_KEY from the Plan's Secret, exchanged for IAM tokens by the SDK. Preflight checks the key
and the region; the VPC API exposes no quota, so quota is not checked (an instance over quota fails at create
time, with IBM's code, in the Terraform run). The SDK's retries are off; RetryPolicy retries (see retry.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from typing import Any, TypeVar

from ibm_cloud_sdk_core import ApiException, BaseService
from ibm_cloud_sdk_core.authenticators import IAMAuthenticator
from ibm_vpc import VpcV1

from . import tags
from .base import AdapterBase
from .model import Cloud, CloudError, CloudPlan, PowerState, Preflight, Resource, Verdict
from .power import wait_for_state
from .retry import Failure, retry_after

T = TypeVar("T")
CLOUD = Cloud.IBM
IAM_URL = "https://iam.cloud.ibm.com"
SEARCH_URL = "https://api.global-search-tagging.cloud.ibm.com"
_STATES = {
    "pending": PowerState.STARTING,
    "starting": PowerState.STARTING,
    "running": PowerState.RUNNING,
    "restarting": PowerState.STARTING,
    "stopping": PowerState.STOPPING,
    "stopped": PowerState.STOPPED,
    "deleting": PowerState.TERMINATED,
}


def _read(exc: Exception) -> Failure | None:
    if not isinstance(exc, ApiException):
        return None
    code = type(exc).__name__
    response = exc.http_response
    try:
        body = response.json() if response is not None else {}
        errors = body.get("errors") or []
        code = errors[0].get("code", code) if errors else body.get("errorCode", code)
    except (ValueError, AttributeError):
        pass
    headers = response.headers if response is not None else {}
    return Failure(exc.status_code, code, exc.message or "", retry_after(headers.get("Retry-After")))


class _GlobalSearch(BaseService):  # type: ignore[misc]
    """The one Global Search call the adapter needs, on the SDK core the VPC client is built on."""

    def search(self, query: str, limit: int, cursor: str | None) -> dict[str, Any]:
        body = {
            "query": query,
            "fields": ["crn", "name", "tags", "region"],
            **({"search_cursor": cursor} if cursor else {}),
        }
        request = self.prepare_request(
            method="POST",
            url="/v3/resources/search",
            headers={"Accept": "application/json", "Content-Type": "application/json"},
            params={"limit": limit},
            data=json.dumps(body),
        )
        result: dict[str, Any] = self.send(request).get_result()
        return result


class IbmAdapter(AdapterBase):
    cloud = CLOUD
    _read = staticmethod(_read)

    def _connect(self, credentials: Mapping[str, str], endpoint: str | None) -> None:
        """`endpoint` (tests) stands for all three services: IAM, Global Search and the VPC API (under /v1)."""
        authenticator = IAMAuthenticator(credentials.get("IC_API_KEY", "") or "-", url=endpoint or IAM_URL)
        self._authenticator = authenticator
        self._vpc = VpcV1(authenticator=authenticator)
        self._vpc.set_service_url(f"{endpoint}/v1" if endpoint else f"https://{self.region}.iaas.cloud.ibm.com/v1")
        self._search = _GlobalSearch(service_url=endpoint or SEARCH_URL, authenticator=authenticator)

    def _attempt(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except ApiException:
            # the SDK leaves a failed token request marked active, and the next call would wait 60 s for it
            self._authenticator.token_manager.request_time = 0
            raise

    def preflight(self, plan: CloudPlan) -> Preflight:
        try:
            region = self._call(partial(self._vpc.get_region, plan.region)).get_result()
        except CloudError as error:
            if error.status == 401 or error.code.startswith("BXNIM"):
                return Preflight(CLOUD, Verdict.INVALID_CREDENTIALS, f"credentials refused ({error.code})")
            if error.status == 404:
                return Preflight(CLOUD, Verdict.UNKNOWN_REGION, f"region {plan.region} not found ({error.code})")
            raise
        if region.get("status") != "available":
            return Preflight(CLOUD, Verdict.UNKNOWN_REGION, f"region {plan.region} is {region.get('status')}")
        return Preflight(
            CLOUD, Verdict.OK, f"credentials valid, region {plan.region} available (the VPC API exposes no quota)"
        )

    def _pages(self, query: str) -> Iterator[list[dict[str, Any]]]:
        cursor: str | None = None
        while True:
            found = self._call(partial(self._search.search, query, self.page_size, cursor))
            items = found.get("items", [])
            yield items
            cursor = found.get("search_cursor")
            if len(items) < self.page_size or not cursor:
                return

    def _found(self, tag_query: str) -> list[Resource]:
        """Instances in this region whose tags match; each one's status from the VPC API (search does not hold it)."""
        query = f"service_name:is AND type:instance AND region:{self.region} AND {tag_query}"
        found = []
        for items in self._pages(query):
            for item in items:
                ident = item["crn"].rsplit(":", 1)[-1]
                tenant, plan, cost_center = tags.read_user_tags(item.get("tags", []))
                found.append(
                    Resource(
                        CLOUD,
                        "instance",
                        ident,
                        item.get("name", ident),
                        self._state(ident),
                        tenant,
                        plan,
                        cost_center,
                        self.region,
                    )
                )
        return found

    def _state(self, ident: str) -> PowerState:
        try:
            instance = self._call(partial(self._vpc.get_instance, ident)).get_result()
        except CloudError as error:
            if error.status == 404:
                return PowerState.TERMINATED
            raise
        return _STATES.get(instance.get("status", ""), PowerState.OTHER)

    def inventory(self, tenant: str) -> list[Resource]:
        """The search's answer, kept to the live instances whose own tag names the tenant (the index may answer
        more: a search for acme must never hand back acme-corp's)."""
        key = tags.tenant_key(CLOUD)
        found = self._found(f'tags:"{key}:{tenant}"')
        return [r for r in found if r.tenant == tenant and r.state is not PowerState.TERMINATED]

    def _act(self, ids: tuple[str, ...], wanted: PowerState) -> None:
        action = "stop" if wanted is PowerState.STOPPED else "start"
        for ident in ids:
            self._call(partial(self._vpc.create_instance_action, ident, action))
        wait_for_state(lambda: [self._state(i) for i in ids], wanted, self.poll_seconds, self.deadline_seconds)

    def _tagged(self) -> list[Resource]:
        return self._found(f"tags:{tags.tenant_key(CLOUD)}\\:*")
