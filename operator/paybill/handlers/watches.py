"""Whether the operator's watches make progress, and waiting for CRDs that are missing (issue 13, items 3 and 9).

kopf exposes no watch health, and a watch that hears nothing looks the same as a quiet cluster. So every watch
stream kopf runs is observed (``observe_kopf_watches`` wraps kopf 1.45's ``continuous_watch``, the one function
every list and watch of a resource goes through): anything it yields (a listed object, the end of a listing, an
event, a BOOKMARK) is progress. A kube-apiserver sends a bookmark about once a minute on an idle watch (the
emulator every few seconds), and kopf reconnects a stream silent for 70 s, so a stream without progress for
longer than ``PAYBILL_WATCH_STALE_SECONDS`` (default 180) is stuck: the server is unreachable, or answers
nothing (the incident: a restarted server dropping every event below kopf's old resourceVersion). The
``watches`` probe then raises, and kopf's liveness endpoint answers 500.

A resource the server stops serving (its CRD deleted, or a server restarted without it) makes kopf's list or
watch fail with 404, which kopf treats as fatal ("Multidimensional multitasker has failed"): here it is logged
once, the stream waits and tries again until the resource is back, and health says what it waits for. Waiting
for a CRD is not a liveness failure: restarting the operator would not bring it back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kopf._cogs.clients import errors as kopf_errors
from kopf._cogs.clients import watching as kopf_watching

from ..kubeclient import Kube, KubeError

STALE_ENV = "PAYBILL_WATCH_STALE_SECONDS"
DEFAULT_STALE_SECONDS = 180.0
MISSING_RETRY_SECONDS = 2.0  # how often a stream whose resource is not served asks again
GROUP_VERSION = "paybill.dev/v1alpha1"

logger = logging.getLogger("paybill.watches")


def stale_after(environ: Mapping[str, str]) -> float:
    return float(environ.get(STALE_ENV) or DEFAULT_STALE_SECONDS)


@dataclass
class Stream:
    progressed: float  # when it last yielded anything (or opened, until it does)
    missing_since: float | None = None  # the server answers 404 for the resource


@dataclass(frozen=True)
class Health:
    """The verdict over every stream: stale ones fail liveness; missing ones are only reported."""

    stale: tuple[tuple[str, float], ...]  # (resource, seconds without progress)
    missing: tuple[str, ...]
    streams: int
    oldest_progress: float

    @property
    def alive(self) -> bool:
        return not self.stale

    def summary(self) -> dict[str, Any]:
        summary: dict[str, Any] = {"streams": self.streams, "oldest_progress_seconds": round(self.oldest_progress, 1)}
        if self.missing:
            summary["waiting_for_crds"] = list(self.missing)
        return summary

    def failure(self) -> str:
        stuck = ", ".join(f"{name} ({seconds:.0f}s)" for name, seconds in self.stale)
        return f"watches without an event, bookmark or listing: {stuck}"


def judge(streams: Mapping[str, Stream], now: float, stale_seconds: float, missing_crds: tuple[str, ...]) -> Health:
    """Pure: which streams made no progress for longer than ``stale_seconds`` (those waiting for their CRD do
    not count), and which resources are missing (by the streams' 404s and by the check at start)."""
    ages = {name: now - stream.progressed for name, stream in streams.items() if stream.missing_since is None}
    stale = tuple(sorted((name, age) for name, age in ages.items() if age > stale_seconds))
    missing = tuple(sorted({name for name, s in streams.items() if s.missing_since is not None} | set(missing_crds)))
    return Health(stale, missing, len(streams), max(ages.values(), default=0.0))


@dataclass
class WatchProgress:
    """Progress of every watch stream of this operator (one per resource and namespace)."""

    clock: Callable[[], float] = time.monotonic
    streams: dict[str, Stream] = field(default_factory=dict)
    missing_at_start: tuple[str, ...] = ()

    def reset(self) -> None:
        self.streams.clear()
        self.missing_at_start = ()

    def opened(self, name: str) -> None:
        self.streams.setdefault(name, Stream(self.clock()))

    def progressed(self, name: str) -> None:
        stream = self.streams.setdefault(name, Stream(self.clock()))
        stream.progressed = self.clock()
        if stream.missing_since is not None:
            logger.info("%s is served again: watching it", name)
            stream.missing_since = None
        self.missing_at_start = tuple(m for m in self.missing_at_start if m != name)

    def missing(self, name: str) -> None:
        stream = self.streams.setdefault(name, Stream(self.clock()))
        if stream.missing_since is None:
            stream.missing_since = self.clock()
            logger.warning(
                "%s is not served by the API server (its CRD is missing): waiting for it; apply the CRDs "
                "(crds/, or `paybill crds`)",
                name,
            )

    def closed(self, name: str) -> None:
        self.streams.pop(name, None)

    def health(self, stale_seconds: float) -> Health:
        return judge(self.streams, self.clock(), stale_seconds, self.missing_at_start)


PROGRESS = WatchProgress()


def stream_name(resource: Any, namespace: str | None) -> str:
    name = f"{resource.plural}.{resource.group}" if resource.group else resource.plural
    return f"{name} in {namespace}" if namespace else name


def observe_kopf_watches(progress: WatchProgress = PROGRESS) -> None:
    """Wrap kopf's ``continuous_watch`` (once per process): progress is recorded, a 404 waits instead of ending
    the operator. kopf's ``infinite_watch`` calls it again whenever it returns."""
    original = kopf_watching.continuous_watch
    if getattr(original, "paybill_observed", False):
        return

    async def continuous_watch(*, resource: Any, namespace: Any, **kwargs: Any) -> AsyncIterator[Any]:
        name = stream_name(resource, namespace)
        progress.opened(name)
        try:
            async for item in original(resource=resource, namespace=namespace, **kwargs):
                progress.progressed(name)
                yield item
        except kopf_errors.APINotFoundError:
            progress.missing(name)
            await asyncio.sleep(MISSING_RETRY_SECONDS)
        except (asyncio.CancelledError, GeneratorExit):  # kopf stopped watching it (or is stopping)
            progress.closed(name)
            raise

    continuous_watch.paybill_observed = True  # type: ignore[attr-defined]
    kopf_watching.continuous_watch = continuous_watch  # type: ignore[assignment]


def missing_crds(kube: Kube, expected: tuple[str, ...]) -> tuple[str, ...]:
    """Which of the operator's resources (plural.group) the API server does not serve now; none when it cannot
    be asked (the streams' own 404s report a missing CRD then)."""
    try:
        served = kube.request("GET", f"/apis/{GROUP_VERSION}")["resources"]
    except KubeError as error:
        if error.status != 404:
            return ()
        served = []
    except (OSError, urllib3.exceptions.HTTPError):
        return ()
    group = GROUP_VERSION.split("/")[0]
    plurals = {f"{resource['name']}.{group}" for resource in served if "/" not in resource["name"]}
    return tuple(name for name in expected if name not in plurals)
