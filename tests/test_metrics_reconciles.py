"""The reconcile wrapper every reconciling handler wears: kopf's outcomes as controller-runtime's results, the time
of each call, and a handler that keeps its name (kopf's handler id, its progress annotations) and its kind."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import kopf
import pytest

from paybill import metrics
from paybill.handlers.instrument import reconciles


def count(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("raised", "result"),
    [
        (None, "success"),
        (kopf.TemporaryError("wait for the plan", delay=5), "requeue_after"),
        (kopf.PermanentError("refused"), "error"),
        (ValueError("a bug"), "error"),
    ],
)
def test_each_outcome_is_counted_as_controller_runtime_names_it(raised: Exception | None, result: str) -> None:
    controller = f"unit-{type(raised).__name__}"

    @reconciles(controller)
    def handler(**_: Any) -> str:
        if raised is not None:
            raise raised
        return "done"

    errors = count("controller_runtime_reconcile_errors_total", controller=controller)
    if raised is None:
        assert handler(body={}) == "done"
    else:
        with pytest.raises(type(raised)):
            handler(body={})
    assert count("controller_runtime_reconcile_total", controller=controller, result=result) == 1
    assert count("controller_runtime_reconcile_errors_total", controller=controller) == errors + (result == "error")
    assert count("controller_runtime_reconcile_time_seconds_count", controller=controller) == 1
    assert count("controller_runtime_active_workers", controller=controller) == 0


def test_an_async_handler_stays_async_and_an_interrupted_one_is_requeued() -> None:
    started = asyncio.Event()

    @reconciles("unit-async")
    async def handler(**_: Any) -> None:
        started.set()
        await asyncio.sleep(60)

    async def interrupt() -> None:
        task = asyncio.create_task(handler())
        await started.wait()
        assert count("controller_runtime_active_workers", controller="unit-async") == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    assert inspect.iscoroutinefunction(handler)
    asyncio.run(interrupt())
    assert count("controller_runtime_reconcile_total", controller="unit-async", result="requeue") == 1
    assert count("controller_runtime_active_workers", controller="unit-async") == 0


def test_a_wrapped_handler_keeps_kopfs_handler_id() -> None:
    from paybill.handlers import tenant

    assert getattr(tenant.reconcile_tenant, "__qualname__", None) == "reconcile_tenant"
    assert not inspect.iscoroutinefunction(tenant.reconcile_tenant)
    ids = {handler.id for handler in kopf.get_default_registry()._changing.get_all_handlers()}
    assert "reconcile_tenant" in ids and "run_workflow" in ids
