"""One harness per faked cloud: how to build its adapter against its fake, seed instances, exhaust quota and
name the call to fail; test_fakes.py runs the same cases through each."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paybill.clouds import tags
from paybill.clouds.model import Cloud
from paybill.clouds.retry import RetryPolicy

from .fakes import azure, gcp, ibm, oci
from .fakes.base import Answer, FakeCloud, Instance


@dataclass
class Harness:
    cloud: Cloud
    fake: FakeCloud
    region: str  # a region the fake knows
    credentials: dict[str, str]
    bad_credentials: dict[str, str]
    build: Callable[..., Any]  # (credentials, region, endpoint, retry) -> adapter
    list_path: str  # the path regex of the call inventory makes
    list_method: str
    throttle: Callable[[str], Answer]  # Retry-After -> the cloud's 429
    unavailable: Callable[[], Answer]  # the cloud's 503
    exhaust_quota: Callable[[], None] | None  # None: the cloud exposes no quota to check
    page_size: int
    new_instance: Callable[[int, str, dict[str, str], str], Instance]  # (serial, tenant, tags, state)
    action: tuple[str, str] = ("POST", "")  # method and path regex of a power action
    adapter_id: Callable[[Instance], str] = lambda instance: instance.id

    def acted(self, since: int) -> bool:
        """Whether a power action was asked since the fake's `since`-th request."""
        method, path = self.action
        return any(r.method == method and re.fullmatch(path, r.path) for r in self.fake.seen[since:])

    def adapter(self, credentials: dict[str, str] | None = None, region: str | None = None, **kw: Any) -> Any:
        retry = kw.pop("retry", RetryPolicy(sleep=lambda _: None))
        return self.build(credentials or self.credentials, region or self.region, self.fake.url, retry, **kw)

    def seed(self, tenant: str, count: int, state: str = "running", plan: str = "gold") -> list[str]:
        """`count` instances tagged for the tenant; their adapter ids."""
        made = []
        for _ in range(count):
            instance = self.new_instance(next(_serial), tenant, tags.tags(self.cloud, tenant, plan, "cc-7"), state)
            self.fake.instances[instance.id] = instance
            made.append(self.adapter_id(instance))
        return sorted(made)


_serial = itertools.count(1)


def gcp_harness() -> Harness:
    from paybill.clouds.gcp import GcpAdapter

    fake = gcp.FakeGcp()

    def build(credentials: dict[str, str], region: str, endpoint: str, retry: RetryPolicy, **kw: Any) -> GcpAdapter:
        return GcpAdapter(credentials, region, endpoint=endpoint, retry=retry, poll_seconds=0.01, **kw)

    def exhaust() -> None:
        fake.quotas["CPUS"] = (24.0, 23.0)

    good = {"GOOGLE_PROJECT": gcp.PROJECT, "GOOGLE_OAUTH_ACCESS_TOKEN": gcp.TOKEN}
    return Harness(
        Cloud.GCP,
        fake,
        "us-central1",
        good,
        {**good, "GOOGLE_OAUTH_ACCESS_TOKEN": "ya29.stolen-looking-token-987654321"},
        build,
        rf"/compute/v1/projects/{gcp.PROJECT}/aggregated/instances",
        "GET",
        lambda after: gcp.error(
            429, "rateLimitExceeded", "Quota exceeded for quota metric 'Queries'", {"Retry-After": after}
        ),
        lambda: gcp.error(503, "backendError", "The service is currently unavailable."),
        exhaust,
        page_size=7,
        new_instance=lambda n, tenant, found, state: Instance(
            str(10_000_000 + n), f"vm-{tenant}-{n}", "us-central1-a", found, state
        ),
        adapter_id=lambda instance: f"{instance.region}/{instance.name}",
    )


def azure_harness() -> Harness:
    from paybill.clouds.azure import AzureAdapter

    fake = azure.FakeAzure()

    def build(credentials: dict[str, str], region: str, endpoint: str, retry: RetryPolicy, **kw: Any) -> AzureAdapter:
        return AzureAdapter(credentials, region, endpoint=endpoint, retry=retry, poll_seconds=0.01, **kw)

    def exhaust() -> None:
        fake.usages["cores"] = (100, 99)

    def new_instance(n: int, tenant: str, found: dict[str, str], state: str) -> Instance:
        name = f"vm-{tenant}-{n}"
        return Instance(azure.machine_id(f"paybill-{tenant}", name), name, "westeurope", found, state)

    good = {"ARM_SUBSCRIPTION_ID": azure.SUBSCRIPTION, "ARM_ACCESS_TOKEN": azure.TOKEN}
    return Harness(
        Cloud.AZURE,
        fake,
        "westeurope",
        good,
        {**good, "ARM_ACCESS_TOKEN": "eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.stolen-looking"},
        build,
        rf"/subscriptions/{azure.SUBSCRIPTION}/providers/Microsoft.Compute/virtualMachines",
        "GET",
        lambda after: azure.error(
            429, "SubscriptionRequestsThrottled", "Number of requests exceeded the limit", {"Retry-After": after}
        ),
        lambda: azure.error(503, "ServiceUnavailable", "The service is temporarily unavailable."),
        exhaust,
        page_size=7,
        new_instance=new_instance,
        action=("POST", r".*/virtualMachines/[^/]+/(deallocate|start)"),
    )


def oci_harness() -> Harness:
    from paybill.clouds.oci import OciAdapter

    fake = oci.FakeOci()

    def build(credentials: dict[str, str], region: str, endpoint: str, retry: RetryPolicy, **kw: Any) -> OciAdapter:
        return OciAdapter(credentials, region, endpoint=endpoint, retry=retry, poll_seconds=0.01, **kw)

    def exhaust() -> None:
        for domain in fake.cores:
            fake.cores[domain] = (0.0, 100.0)

    good = {
        "OCI_TENANCY_OCID": oci.TENANCY,
        "OCI_USER_OCID": oci.USER,
        "OCI_FINGERPRINT": oci.FINGERPRINT,
        "OCI_PRIVATE_KEY": oci.PRIVATE_KEY,
    }
    return Harness(
        Cloud.OCI,
        fake,
        "eu-frankfurt-1",
        good,
        {
            **good,
            "OCI_PRIVATE_KEY": oci.OTHER_PRIVATE_KEY,
            "OCI_FINGERPRINT": "aa:bb:cc:dd:ee:ff:00:11:22:33:44:55:66:77:88:99",
        },
        build,
        r"/20180409/resources",
        "POST",
        lambda after: oci.error(429, "TooManyRequests", "Too many requests for the user", {"retry-after": after}),
        lambda: oci.error(503, "ServiceUnavailable", "The service is currently unavailable."),
        exhaust,
        page_size=7,
        new_instance=lambda n, tenant, found, state: Instance(
            f"ocid1.instance.oc1.eu-frankfurt-1.{n:08d}", f"vm-{tenant}-{n}", "eu-frankfurt-1", found, state
        ),
        action=("POST", r"/20160918/instances/[^/]+"),
    )


def ibm_harness() -> Harness:
    from paybill.clouds.ibm import IbmAdapter

    fake = ibm.FakeIbm()

    def build(credentials: dict[str, str], region: str, endpoint: str, retry: RetryPolicy, **kw: Any) -> IbmAdapter:
        return IbmAdapter(credentials, region, endpoint=endpoint, retry=retry, poll_seconds=0.01, **kw)

    def tagged(n: int, tenant: str, found: dict[str, str], state: str) -> Instance:
        return Instance(f"0717_{n:08d}", f"vm-{tenant}-{n}", "us-south", found, state)

    return Harness(
        Cloud.IBM,
        fake,
        "us-south",
        {"IC_API_KEY": ibm.API_KEY},
        {"IC_API_KEY": "ibm-stolen-looking-key-9876543210"},
        build,
        r"/v3/resources/search",
        "POST",
        lambda after: ibm.error(429, "too_many_requests", "Rate limit exceeded", {"Retry-After": after}),
        lambda: ibm.error(503, "service_unavailable", "The service is temporarily unavailable."),
        None,  # the VPC API exposes no quota
        page_size=7,
        new_instance=tagged,
        action=("POST", r"/v1/instances/[^/]+/actions"),
    )


HARNESSES: dict[str, Callable[[], Harness]] = {
    "azure": azure_harness,
    "gcp": gcp_harness,
    "oci": oci_harness,
    "ibm": ibm_harness,
}
