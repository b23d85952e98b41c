"""The workflow pool: agent work runs in threads of its own, bounded overall and per tenant (finding 13)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter

import pytest

from paybill.workflows.pool import WorkflowPool


class Gate:
    """Blocking work that records how many run at once, overall and per tenant."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.active: Counter[str] = Counter()
        self.peak: Counter[str] = Counter()
        self.peak_overall = 0

    def work(self, tenant: str) -> str:
        with self.lock:
            self.active[tenant] += 1
            self.peak[tenant] = max(self.peak[tenant], self.active[tenant])
            self.peak_overall = max(self.peak_overall, sum(self.active.values()))
        try:
            assert self.release.wait(timeout=30)
        finally:
            with self.lock:
                self.active[tenant] -= 1
        return tenant

    def running(self) -> int:
        with self.lock:
            return sum(self.active.values())


async def _until(check: object, timeout: float = 10) -> None:
    async def poll() -> None:
        while not check():  # type: ignore[operator]
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def test_workflows_are_bounded_overall_and_per_tenant() -> None:
    gate = Gate()
    pool = WorkflowPool(workers=3, per_tenant=2)

    async def scenario() -> list[str]:
        runs = [
            asyncio.create_task(pool.run(tenant, lambda t=tenant: gate.work(t)))
            for tenant in ("a", "b")
            for _ in range(5)
        ]
        await _until(lambda: gate.running() == 3)
        gate.release.set()
        return await asyncio.gather(*runs)

    try:
        assert sorted(asyncio.run(scenario())) == ["a"] * 5 + ["b"] * 5
    finally:
        pool.shutdown()
    assert gate.peak_overall == 3 and max(gate.peak.values()) == 2


def test_a_busy_tenant_never_holds_a_thread_another_tenant_needs() -> None:
    gate = Gate()
    pool = WorkflowPool(workers=3, per_tenant=2)

    async def scenario() -> None:
        busy = [asyncio.create_task(pool.run("busy", lambda: gate.work("busy"))) for _ in range(6)]
        await _until(lambda: gate.running() == 2)
        assert await pool.run("quiet", lambda: "done") == "done"  # while the busy tenant's work still blocks
        assert gate.running() == 2 and not any(task.done() for task in busy)
        gate.release.set()
        await asyncio.gather(*busy)

    try:
        asyncio.run(scenario())
    finally:
        pool.shutdown()


@pytest.mark.parametrize(
    ("environ", "workers", "per_tenant"),
    [
        ({}, 4, 2),
        ({"PAYBILL_WORKFLOW_WORKERS": "8", "PAYBILL_WORKFLOW_WORKERS_PER_TENANT": "3"}, 8, 3),
        ({"PAYBILL_WORKFLOW_WORKERS": "2", "PAYBILL_WORKFLOW_WORKERS_PER_TENANT": "5"}, 2, 2),
    ],
)
def test_pool_size_from_the_environment(environ: dict[str, str], workers: int, per_tenant: int) -> None:
    pool = WorkflowPool.from_environ(environ)
    try:
        assert (pool.workers, pool.per_tenant) == (workers, per_tenant)
    finally:
        pool.shutdown()
