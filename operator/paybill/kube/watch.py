"""Watch: a stream of events from a resourceVersion (or a synthetic ADDED per object), bookmarks, expiry."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp.web
from kmock._internal import rendering

from . import tables
from .replies import Replies, status_error
from .routing import Route, raw_request, table_request
from .store import Expired, WatchEvent


class Watching(Replies):
    """Watch streams (a mixin of EmulatedApiServer); ``close_watches`` ends them all."""

    bookmark_interval: float
    _watches: set[asyncio.Task[Any]]
    _stopping: bool

    async def _watch(self, request: rendering.Request, route: Route) -> aiohttp.web.StreamResponse:
        if self._stopping:
            raise status_error(503, "ServiceUnavailable", "the apiserver is shutting down")
        params = request.params
        matches = self._matcher(request, route)
        if route.name:
            by_name = matches
            matches = lambda obj: by_name(obj) and obj["metadata"]["name"] == route.name  # noqa: E731
        timeout = float(params["timeoutSeconds"]) if params.get("timeoutSeconds") else None
        bookmarks = params.get("allowWatchBookmarks") in ("true", "1")
        include_object = table_request(request)
        key = route.rtype.key

        queue = self.store.subscribe(key)
        task = asyncio.current_task()
        if task is not None:
            self._watches.add(task)
        try:
            since = params.get("resourceVersion")
            if since and since != "0":
                try:
                    backlog = self.store.events_since(key, int(since))
                except Expired as expired:
                    return await self._expired_stream(request, str(expired))
                except ValueError:
                    return await self._expired_stream(request, f"too old resource version: {since}")
            else:
                backlog = [synthetic_added(obj) for obj in self.store.list(key, route.namespace)]
            response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(raw_request(request))

            async def send(event_type: str, obj: dict[str, Any]) -> None:
                shown = self._served(route.rtype, obj)
                if include_object is not None and event_type != "BOOKMARK":
                    shown = tables.table(route.rtype, [shown], obj["metadata"]["resourceVersion"], include_object)
                await response.write(json.dumps({"type": event_type, "object": shown}).encode() + b"\n")

            seen = int(since) if since and since.isdigit() else 0
            for event in backlog:
                if self._in_scope(event.object, route) and matches(event.object):
                    await send(event.type, event.object)
                seen = max(seen, event.resource_version)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout if timeout else None
            while deadline is None or loop.time() < deadline:
                wait = self.bookmark_interval
                if deadline is not None:
                    wait = min(wait, deadline - loop.time())
                try:
                    event = await asyncio.wait_for(queue.get(), timeout=max(wait, 0))
                except TimeoutError:
                    if bookmarks:
                        await send(
                            "BOOKMARK",
                            {
                                "kind": route.rtype.kind,
                                "apiVersion": route.rtype.api_version,
                                "metadata": {"resourceVersion": str(self.store.revision)},
                            },
                        )
                    continue
                if event.resource_version <= seen:
                    continue
                seen = event.resource_version
                if self._in_scope(event.object, route) and matches(event.object):
                    await send(event.type, event.object)
            await response.write_eof()
            return response
        except ConnectionResetError:
            raise
        except asyncio.CancelledError:  # ended by the server (close_watches): the client must see the close
            transport = raw_request(request).transport
            if transport is not None:
                transport.close()
            raise
        finally:
            self.store.unsubscribe(key, queue)
            self._watches.discard(task)  # type: ignore[arg-type]

    async def _expired_stream(self, request: rendering.Request, message: str) -> aiohttp.web.StreamResponse:
        """kube-apiserver's answer to a watch from a version it cannot serve: one ERROR event, a 410 Status."""
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(raw_request(request))
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "reason": "Expired",
            "message": message,
            "code": 410,
        }
        await response.write(json.dumps({"type": "ERROR", "object": status}).encode() + b"\n")
        await response.write_eof()
        return response

    @staticmethod
    def _in_scope(obj: dict[str, Any], route: Route) -> bool:
        return route.namespace is None or obj["metadata"].get("namespace") == route.namespace


def synthetic_added(obj: dict[str, Any]) -> WatchEvent:
    return WatchEvent(int(obj["metadata"]["resourceVersion"]), "ADDED", obj)
