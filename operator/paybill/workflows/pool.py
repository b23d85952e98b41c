"""Agent work runs in threads of its own, never in kopf's executor, so it cannot delay tenant reconciliation.

At most `workers` workflow runs at once overall and `per_tenant` per tenant; a tenant over its share waits
on its own semaphore (holding no thread), so one busy tenant cannot take the threads another one needs.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

WORKERS_ENV = "PAYBILL_WORKFLOW_WORKERS"
PER_TENANT_ENV = "PAYBILL_WORKFLOW_WORKERS_PER_TENANT"
DEFAULT_WORKERS = 4
DEFAULT_PER_TENANT = 2

T = TypeVar("T")


class WorkflowPool:
    def __init__(self, workers: int = DEFAULT_WORKERS, per_tenant: int = DEFAULT_PER_TENANT) -> None:
        self.workers = max(1, workers)
        self.per_tenant = max(1, min(per_tenant, self.workers))
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="paybill-workflow")
        self._tenants: dict[str, tuple[asyncio.Semaphore, int]] = {}  # semaphore, runs holding or awaiting it

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> WorkflowPool:
        return cls(
            int(environ.get(WORKERS_ENV) or DEFAULT_WORKERS), int(environ.get(PER_TENANT_ENV) or DEFAULT_PER_TENANT)
        )

    async def run(self, tenant: str, work: Callable[[], T]) -> T:
        """Run blocking `work` for `tenant` in the pool (kopf's context variables carried over, for Events)."""
        semaphore, users = self._tenants.get(tenant) or (asyncio.Semaphore(self.per_tenant), 0)
        self._tenants[tenant] = (semaphore, users + 1)
        try:
            async with semaphore:
                context = contextvars.copy_context()
                return await asyncio.get_running_loop().run_in_executor(self._executor, context.run, work)
        finally:
            semaphore, users = self._tenants[tenant]
            if users == 1:
                del self._tenants[tenant]
            else:
                self._tenants[tenant] = (semaphore, users - 1)

    def shutdown(self) -> None:
        """Drop queued work; runs in progress end with their statement's timeout."""
        self._executor.shutdown(wait=False, cancel_futures=True)
