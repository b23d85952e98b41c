"""One harness per faked cloud: how to build its adapter against its fake, seed instances, exhaust quota and
name the call to fail; test_fakes.py runs the same cases through each."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paybill.clouds import tags
from paybill.clouds.model import Cloud
from paybill.clouds.retry import RetryPolicy

from .fakes import gcp
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
    exhaust_quota: Callable[[], None]
    page_size: int

    def adapter(self, credentials: dict[str, str] | None = None, region: str | None = None, **kw: Any) -> Any:
        retry = kw.pop("retry", RetryPolicy(sleep=lambda _: None))
        return self.build(credentials or self.credentials, region or self.region, self.fake.url, retry, **kw)

    def seed(self, tenant: str, count: int, state: str = "running", plan: str = "gold") -> list[str]:
        """`count` instances tagged for the tenant; their adapter ids."""
        made = []
        for _ in range(count):
            n = next(_serial)
            found = tags.tags(self.cloud, tenant, plan, "cc-7")
            instance = Instance(self.instance_id(n), f"vm-{tenant}-{n}", self.zone(), found, state)
            self.fake.instances[instance.id] = instance
            made.append(self.adapter_id(instance))
        return sorted(made)

    def instance_id(self, n: int) -> str:
        return str(10_000_000 + n)

    def zone(self) -> str:
        return {Cloud.GCP: f"{self.region}-a"}.get(self.cloud, self.region)

    def adapter_id(self, instance: Instance) -> str:
        return {Cloud.GCP: f"{instance.region}/{instance.name}"}.get(self.cloud, instance.id)


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
    )


HARNESSES: dict[str, Callable[[], Harness]] = {"gcp": gcp_harness}
