"""Where the handlers meet the metrics (paybill/metrics.py): the reconcile wrapper every reconciling handler wears,
kopf's per-object queues, and the tenants' phases as their events are taken from those queues.

kopf has no work queue to read a depth from: each object has a queue of watch events and a worker. So the watch
stream every resource goes through (kopf 1.45's ``infinite_watch``) counts an event in when it delivers one, and
kopf's per-event processor (``process_resource_event``) counts it out when a worker takes it; the difference is
``workqueue_depth``. Both are wrapped once, when this module is imported, which is before kopf binds the
processor (``paybill operator`` and ``kopf run -m paybill.handlers`` import the handlers first).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, TypeVar

import kopf
from kopf._cogs.clients import watching as kopf_watching
from kopf._core.reactor import processing as kopf_processing

from .. import metrics
from ..api.meta import GROUP
from ..api.tenant import TenantPhase

F = TypeVar("F", bound=Callable[..., Any])


def result_of(exc: BaseException) -> str:
    """controller-runtime's result for how a handler ended: kopf retries a TemporaryError after its delay
    (requeue_after), re-runs an interrupted one (requeue); anything else is an error (kopf retries it too)."""
    if isinstance(exc, kopf.TemporaryError):
        return "requeue_after"
    if isinstance(exc, asyncio.CancelledError):
        return "requeue"
    return "error"


def reconciles(controller: str) -> Callable[[F], F]:
    """Count and time each call of a reconciling handler as one reconcile of `controller`. Put it under kopf's
    decorators: the handler keeps its name (kopf's handler id) and stays sync or async as it was."""

    def wrap(handler: F) -> F:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                with metrics.reconciling(controller, result_of):
                    return await handler(*args, **kwargs)

            return timed_async  # type: ignore[return-value]

        @functools.wraps(handler)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with metrics.reconciling(controller, result_of):
                return handler(*args, **kwargs)

        return timed  # type: ignore[return-value]

    return wrap


def tenant_seen(raw_event: Mapping[str, Any]) -> None:
    """paybill_tenants: each tenant's phase (Pending until it has one) and plan, as its worker takes the event (no
    handler: kopf would log each call)."""
    body = raw_event.get("object") or {}
    uid = str((body.get("metadata") or {}).get("uid", ""))
    if raw_event.get("type") == "DELETED":
        metrics.TENANTS.gone(uid)
    else:
        phase = (body.get("status") or {}).get("phase") or TenantPhase.PENDING
        metrics.TENANTS.saw(uid, str(phase), str((body.get("spec") or {}).get("planRef", "")))


def controller_of(resource: Any) -> str | None:
    """The controller a watched resource belongs to (its kind, lowercased, as kubebuilder names controllers);
    None for what is not Paybill's."""
    if getattr(resource, "group", None) != GROUP or not getattr(resource, "kind", None):
        return None
    return str(resource.kind).lower()


def observe_kopf_queues(queue: metrics.WorkQueue = metrics.WORKQUEUE) -> None:
    """Wrap kopf's watch stream and its per-event processor (once per process) to count events in and out."""
    if getattr(kopf_watching.infinite_watch, "paybill_queued", False):
        return
    watch, process = kopf_watching.infinite_watch, kopf_processing.process_resource_event

    async def infinite_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        name = controller_of(resource)
        async for item in watch(resource=resource, **kwargs):
            if name is not None and isinstance(item, dict) and item.get("type") != "BOOKMARK":
                queue.added(name)  # the watcher hands exactly these to the object's queue
            yield item

    async def process_resource_event(*, resource: Any, raw_event: Any, **kwargs: Any) -> Any:
        name = controller_of(resource)
        if name is not None:
            queue.taken(name)
        if name == "tenant":
            tenant_seen(raw_event)
        return await process(resource=resource, raw_event=raw_event, **kwargs)

    infinite_watch.paybill_queued = True  # type: ignore[attr-defined]
    kopf_watching.infinite_watch = infinite_watch  # type: ignore[assignment]
    kopf_processing.process_resource_event = process_resource_event  # type: ignore[assignment]


observe_kopf_queues()
