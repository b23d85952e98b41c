"""What every adapter shares: its settings, counted and retried calls, credential values to redact, suspend and
resume through one idempotent plan, and orphans. Each cloud's module keeps only its SDK-specific part: the clients
(`_connect`), how an SDK error reads (`_read`), preflight, inventory, its tagged instances (`_tagged`) and the power
action (`_act`)."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import ClassVar, TypeVar

from paybill.terraform.adoption import CloudObject
from paybill.terraform.contract import TAG_CONVENTIONS

from .model import Cloud, CloudPlan, PowerChange, PowerState, Preflight, Resource, Unsupported
from .power import power_change
from .retry import Failure, RetryPolicy, calling

T = TypeVar("T")


class AdapterBase:
    cloud: ClassVar[Cloud]
    POLL_SECONDS: ClassVar[float] = 5.0  # between reads of an instance or operation the adapter waits for
    DEADLINE_SECONDS: ClassVar[float] = 900.0  # a power change not done by then is a TimeoutError
    PAGE_SIZE: ClassVar[int] = 1000  # items asked per page (where the API takes a size)
    PUBLIC_KEYS: ClassVar[frozenset[str]] = frozenset()  # credential keys that are no secret; every other is one

    def __init__(
        self,
        credentials: Mapping[str, str],
        region: str,
        endpoint: str | None = None,
        retry: RetryPolicy | None = None,
        poll_seconds: float | None = None,
        deadline_seconds: float | None = None,
        page_size: int | None = None,
    ) -> None:
        """`endpoint`: the cloud's API at another address (a loopback fake: tests, PAYBILL_CLOUD_ENDPOINTS)."""
        self.region = region
        self.retry = retry or RetryPolicy()
        self.poll_seconds = self.POLL_SECONDS if poll_seconds is None else poll_seconds
        self.deadline_seconds = self.DEADLINE_SECONDS if deadline_seconds is None else deadline_seconds
        self.page_size = self.PAGE_SIZE if page_size is None else page_size
        self.calls = 0
        self._secrets = tuple(value for key, value in credentials.items() if key not in self.PUBLIC_KEYS)
        self._connect(credentials, endpoint)

    # -- the SDK-specific part ----------------------------------------------------------------------------------

    def _connect(self, credentials: Mapping[str, str], endpoint: str | None) -> None:
        raise NotImplementedError

    @staticmethod
    def _read(exc: Exception) -> Failure | None:
        """An SDK exception as the cloud's status, code and message (None: not the SDK's, raised as it is)."""
        raise NotImplementedError

    def preflight(self, plan: CloudPlan) -> Preflight:
        raise NotImplementedError

    def inventory(self, tenant: str) -> list[Resource]:
        raise NotImplementedError

    def _tagged(self) -> list[Resource]:
        """Every resource carrying the tenant tag, whichever tenant."""
        raise NotImplementedError

    def tenant_objects(self, tenant: str) -> list[CloudObject]:
        raise Unsupported(f"finding a tenant's resources to adopt into Terraform is not supported for {self.cloud}")

    def _act(self, ids: tuple[str, ...], wanted: PowerState) -> None:
        """Stop (wanted STOPPED) or start these instances, returning once they are (TimeoutError past the deadline)."""
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------------------------------

    def _attempt(self, call: Callable[[], T]) -> T:
        """One call as the SDK makes it (a cloud may undo SDK state a failure left behind)."""
        return call()

    def _call(self, call: Callable[[], T]) -> T:
        """call(), counted and retried by the one policy (each SDK's own retries are off)."""

        def counted() -> T:
            self.calls += 1
            return self._attempt(call)

        return calling(self.cloud, self.retry, self._read, self._secrets, counted)

    def _power_targets(self, tenant: str) -> list[Resource]:
        """The tenant's instances with their current state."""
        return [r for r in self.inventory(tenant) if r.kind == "instance"]

    def _power(self, tenant: str, wanted: PowerState) -> PowerChange:
        change = power_change(self._power_targets(tenant), wanted)
        if change.changed:
            self._act(change.changed, wanted)
        return change

    def suspend(self, tenant: str) -> PowerChange:
        return self._power(tenant, PowerState.STOPPED)

    def resume(self, tenant: str) -> PowerChange:
        return self._power(tenant, PowerState.RUNNING)

    def orphans(self, known_tenants: Collection[str]) -> list[Resource]:
        """Tagged resources of tenants that no longer exist (those already terminated cost nothing)."""
        lower = TAG_CONVENTIONS[self.cloud.value].lowercase  # the modules lowercase the tag's value
        known = {tenant.lower() if lower else tenant for tenant in known_tenants}
        return [r for r in self._tagged() if r.tenant not in known and r.state is not PowerState.TERMINATED]
