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
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import kopf
from kopf._cogs.clients import watching as kopf_watching
from kopf._core.reactor import processing as kopf_processing
from kopf._core.reactor import queueing as kopf_queueing

from .. import metrics, peering
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


NOT_LEADING_DELAY = 5  # seconds before a handler refused by the fence is tried again (if this replica leads then)


def ensure_leading() -> None:
    """kopf.TemporaryError unless this replica holds the election now (peering.Fence; always, without an election).
    Never a quiet return: kopf would record the change as handled, and the leader might skip it."""
    fence = peering.FENCE
    if fence is None:
        return
    try:
        fence.ensure()
    except peering.NotLeading as exc:
        raise kopf.TemporaryError(f"not acting: {exc}", delay=NOT_LEADING_DELAY) from None


def _begin() -> peering.Fence | None:
    """The fence a handler begins acting under (None: no election); kopf.TemporaryError if this replica may not."""
    fence = peering.FENCE
    if fence is None:
        return None
    try:
        fence.begin()
    except peering.NotLeading as exc:
        raise kopf.TemporaryError(f"not acting: {exc}", delay=NOT_LEADING_DELAY) from None
    return fence


def leading_now() -> bool:
    """Whether this replica holds the election now (always, without one), for timers: they run again at their next
    interval, so one that is not leading just does nothing (a read error counts as not leading)."""
    try:
        ensure_leading()
    except kopf.TemporaryError:
        return False
    return True


def reconciles(controller: str) -> Callable[[F], F]:
    """Count and time each call of a reconciling handler as one reconcile of `controller`, and let it act only
    while this replica leads (the fence's begin/end: a replica resigning waits for the handlers running). Put it
    under kopf's decorators: the handler keeps its name (kopf's handler id) and stays sync or async as it was."""

    def wrap(handler: F) -> F:
        if inspect.iscoroutinefunction(handler):

            @functools.wraps(handler)
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                with metrics.reconciling(controller, result_of):
                    fence = await asyncio.to_thread(_begin)
                    try:
                        return await handler(*args, **kwargs)
                    finally:
                        if fence is not None:
                            fence.end()

            timed_async.paybill_fenced = True  # type: ignore[attr-defined]
            return timed_async  # type: ignore[return-value]

        @functools.wraps(handler)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with metrics.reconciling(controller, result_of):
                fence = _begin()
                try:
                    return handler(*args, **kwargs)
                finally:
                    if fence is not None:
                        fence.end()

        timed.paybill_fenced = True  # type: ignore[attr-defined]
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


@dataclass
class IndexStreams:
    """Whether kopf's in-memory indexes of a resource (by plural) are as fresh as its watch: its current stream has
    listed (a stream closes when kopf pauses, and lists again when it resumes), no event it delivered waits for its
    object's worker (the index is updated when the worker takes the event), and kopf is not paused now. Touched on
    the event loop only."""

    listed: dict[str, bool] = field(default_factory=dict)
    pending: dict[str, int] = field(default_factory=dict)
    paused: Any = None  # kopf's operator_paused toggle set, once a watch has started

    def opened(self, plural: str) -> None:
        self.listed[plural] = False

    def closed(self, plural: str) -> None:
        self.listed[plural] = False

    def delivered(self, plural: str, item: Any) -> None:
        if item is kopf_watching.Bookmark.LISTED:
            self.listed[plural] = True
        elif isinstance(item, dict) and item.get("type") != "BOOKMARK":
            self.pending[plural] = self.pending.get(plural, 0) + 1

    def taken(self, plural: str) -> None:
        self.pending[plural] = max(0, self.pending.get(plural, 0) - 1)

    def fresh(self, plurals: Iterable[str]) -> bool:
        if self.paused is not None and self.paused.is_on():
            return False
        return all(self.listed.get(plural) and not self.pending.get(plural) for plural in plurals)


INDEX_STREAMS = IndexStreams()


def _plural(resource: Any) -> str:
    return str(getattr(resource, "plural", ""))


def observe_kopf_queues(queue: metrics.WorkQueue = metrics.WORKQUEUE, streams: IndexStreams = INDEX_STREAMS) -> None:
    """Wrap kopf's watch stream, its streaming block and its per-event processor (once per process) to count events
    in and out and to know when a resource's indexes are fresh."""
    if getattr(kopf_watching.infinite_watch, "paybill_queued", False):
        return
    watch, process = kopf_watching.infinite_watch, kopf_processing.process_resource_event
    block = kopf_watching.streaming_block

    async def infinite_watch(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        name, plural = controller_of(resource), _plural(resource)
        streams.paused = kwargs.get("operator_paused", streams.paused)
        async for item in watch(resource=resource, **kwargs):
            streams.delivered(plural, item)
            if name is not None and isinstance(item, dict) and item.get("type") != "BOOKMARK":
                queue.added(name)  # the watcher hands exactly these to the object's queue
            yield item

    @contextlib.asynccontextmanager
    async def streaming_block(*, resource: Any, **kwargs: Any) -> AsyncIterator[Any]:
        async with block(resource=resource, **kwargs) as waiter:
            streams.opened(_plural(resource))  # unpaused: a new stream starts, and lists first
            try:
                yield waiter
            finally:
                streams.closed(_plural(resource))

    async def process_resource_event(*, resource: Any, raw_event: Any, **kwargs: Any) -> Any:
        name = controller_of(resource)
        if isinstance(raw_event, dict) and raw_event.get("type") != "BOOKMARK":
            streams.taken(_plural(resource))
        if name is not None:
            queue.taken(name)
        if name == "tenant":
            tenant_seen(raw_event)
        fence = peering.FENCE  # a replica resigning waits for the event's handlers and the patch of their result
        if fence is None:
            return await process(resource=resource, raw_event=raw_event, **kwargs)
        fence.enter()
        try:
            return await process(resource=resource, raw_event=raw_event, **kwargs)
        finally:
            fence.end()

    depletion = kopf_queueing._wait_for_depletion

    async def wait_for_depletion(*, streams: dict[Any, Any], **kwargs: Any) -> None:
        """Shutting down, a worker sleeping out a handler's retry delay wakes (its stream's pressure) and takes the
        end of its stream at once: kopf waits up to exit_timeout for the workers, raised so that a running handler
        and the patch of its result finish, and would otherwise wait out every such delay."""
        for stream in list(streams.values()):
            stream.pressure.set()
        await depletion(streams=streams, **kwargs)

    kopf_queueing._wait_for_depletion = wait_for_depletion  # type: ignore[assignment]
    infinite_watch.paybill_queued = True  # type: ignore[attr-defined]
    kopf_watching.infinite_watch = infinite_watch  # type: ignore[assignment]
    kopf_watching.streaming_block = streaming_block  # type: ignore[assignment]
    kopf_processing.process_resource_event = process_resource_event  # type: ignore[assignment]


observe_kopf_queues()
