"""In-memory object storage with a global resourceVersion and a watch history (etcd's role)."""

from __future__ import annotations

import asyncio
import builtins
import copy
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

Key = tuple[str, str]  # (group, plural)
ObjectName = tuple[str | None, str]  # (namespace, name)


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    type: str  # ADDED | MODIFIED | DELETED
    object: dict[str, Any]


class Expired(Exception):
    """The requested resourceVersion is older than the retained watch history (HTTP 410)."""


class Store:
    def __init__(self, history: int = 100_000) -> None:
        self._objects: dict[Key, dict[ObjectName, dict[str, Any]]] = {}
        self._history: dict[Key, deque[WatchEvent]] = {}
        self._history_size = history
        self._compacted: dict[Key, int] = {}  # newest resourceVersion dropped from each history
        self._watchers: dict[Key, set[asyncio.Queue[WatchEvent]]] = {}
        self.revision = 1

    def next_revision(self) -> int:
        self.revision += 1
        return self.revision

    def get(self, key: Key, namespace: str | None, name: str) -> dict[str, Any] | None:
        return self._objects.get(key, {}).get((namespace, name))

    def list(self, key: Key, namespace: str | None = None) -> list[dict[str, Any]]:
        objects = self._objects.get(key, {})
        return [obj for (ns, _), obj in objects.items() if namespace is None or ns == namespace]

    def namespaced_in(self, namespace: str) -> Iterator[tuple[Key, dict[str, Any]]]:
        for key, objects in self._objects.items():
            for (ns, _), obj in list(objects.items()):
                if ns == namespace:
                    yield key, obj

    def put(self, key: Key, obj: dict[str, Any], event_type: str) -> None:
        """Store an object whose metadata.resourceVersion is already stamped, and notify watchers."""
        meta = obj["metadata"]
        self._objects.setdefault(key, {})[(meta.get("namespace"), meta["name"])] = obj
        self._emit(key, WatchEvent(int(meta["resourceVersion"]), event_type, obj))

    def remove(self, key: Key, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self._objects.get(key, {}).pop((meta.get("namespace"), meta["name"]), None)
        deleted = copy.deepcopy(obj)
        deleted["metadata"]["resourceVersion"] = str(self.next_revision())
        self._emit(key, WatchEvent(self.revision, "DELETED", deleted))

    def drop_collection(self, key: Key) -> builtins.list[dict[str, Any]]:
        objects = list(self._objects.pop(key, {}).values())
        for obj in objects:
            self.remove(key, obj)
        return objects

    def _emit(self, key: Key, event: WatchEvent) -> None:
        history = self._history.setdefault(key, deque(maxlen=self._history_size))
        if len(history) == history.maxlen:
            self._compacted[key] = history[0].resource_version
        history.append(event)
        for queue in self._watchers.get(key, ()):
            queue.put_nowait(event)

    def events_since(self, key: Key, resource_version: int) -> builtins.list[WatchEvent]:
        """Events after resource_version; Expired if the history no longer reaches back that far."""
        if resource_version < self._compacted.get(key, 0):
            raise Expired(resource_version)
        history = self._history.get(key, deque())
        return [event for event in history if event.resource_version > resource_version]

    def subscribe(self, key: Key) -> asyncio.Queue[WatchEvent]:
        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.setdefault(key, set()).add(queue)
        return queue

    def unsubscribe(self, key: Key, queue: asyncio.Queue[WatchEvent]) -> None:
        self._watchers.get(key, set()).discard(queue)

    def count(self) -> int:
        return sum(len(objects) for objects in self._objects.values())
