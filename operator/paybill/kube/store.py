"""Object storage with a global resourceVersion and a watch history (etcd's role): in memory, and, when opened
on a state directory, persisted there (``persistence``) so that a restart keeps every object, uid and
resourceVersion and never issues a revision twice."""

from __future__ import annotations

import asyncio
import builtins
import copy
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .persistence import Journal, Record, claim_state_dir, load

Key = tuple[str, str]  # (group, plural)
ObjectName = tuple[str | None, str]  # (namespace, name)


@dataclass(frozen=True)
class WatchEvent:
    resource_version: int
    type: str  # ADDED | MODIFIED | DELETED
    object: dict[str, Any]


COMPACT_AFTER = 10_000  # journal records (and at least twice the objects) before a new snapshot


class Expired(Exception):
    """The requested resourceVersion is older than what the server can replay: its retained watch history, or
    the revision it started at (HTTP 410, reason Expired)."""

    def __init__(self, requested: int, oldest: int) -> None:
        super().__init__(f"too old resource version: {requested} ({oldest})")


class Ahead(Expired):
    """The requested resourceVersion was never issued by this server (its storage was reset): HTTP 410 too, so
    that clients relist rather than wait for a version that will mean something else."""

    def __init__(self, requested: int, current: int) -> None:
        Exception.__init__(self, f"too large resource version: {requested}, current: {current}")


class Store:
    def __init__(self, history: int = 100_000) -> None:
        self._objects: dict[Key, dict[ObjectName, dict[str, Any]]] = {}
        self._history: dict[Key, deque[WatchEvent]] = {}
        self._history_size = history
        self._compacted: dict[Key, int] = {}  # newest resourceVersion dropped from each history
        self._watchers: dict[Key, set[asyncio.Queue[WatchEvent]]] = {}
        self._journal: Journal | None = None
        self.revision = 1
        self.started_at = 1  # the revision the server started at: nothing before it can be replayed

    @classmethod
    def open(cls, directory: Path, history: int = 100_000) -> Store:
        """A store persisted in ``directory`` (made 0700 if absent), with what it held when last stopped."""
        claim_state_dir(directory)
        loaded = load(directory)
        store = cls(history)
        for key, obj in loaded.items():
            meta = obj["metadata"]
            store._objects.setdefault(key, {})[(meta.get("namespace"), meta["name"])] = obj
        store.revision = store.started_at = loaded.revision
        store._journal = Journal(directory)
        store._journal.snapshot(store.revision, store.items())
        return store

    def items(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        for key, objects in self._objects.items():
            for obj in objects.values():
                yield key, obj

    def _persist(self, record: Record) -> None:
        """Journal a write before memory changes and watchers hear of it."""
        if self._journal is not None:
            self._journal.append(record)

    def _compact(self) -> None:
        journal = self._journal
        if journal is not None and journal.records > max(COMPACT_AFTER, 2 * self.count()):
            journal.snapshot(self.revision, self.items())

    async def sync(self) -> None:
        """Return once every write so far is on disk (at once in memory)."""
        if self._journal is not None:
            await self._journal.sync()

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()

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
        self._persist(Record(int(meta["resourceVersion"]), event_type, key, obj))
        self._objects.setdefault(key, {})[(meta.get("namespace"), meta["name"])] = obj
        self._emit(key, WatchEvent(int(meta["resourceVersion"]), event_type, obj))
        self._compact()

    def remove(self, key: Key, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        deleted = copy.deepcopy(obj)
        deleted["metadata"]["resourceVersion"] = str(self.next_revision())
        self._persist(Record(self.revision, "DELETED", key, deleted))
        self._objects.get(key, {}).pop((meta.get("namespace"), meta["name"]), None)
        self._emit(key, WatchEvent(self.revision, "DELETED", deleted))
        self._compact()

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

    def require_issued(self, resource_version: int) -> None:
        """Ahead if this server never issued ``resource_version``."""
        if resource_version > self.revision:
            raise Ahead(resource_version, self.revision)

    def events_since(self, key: Key, resource_version: int) -> builtins.list[WatchEvent]:
        """Events after resource_version; Expired if the history no longer reaches back that far (or to before
        the server started), Ahead if the server never issued that version."""
        self.require_issued(resource_version)
        oldest = max(self._compacted.get(key, 0), self.started_at)
        if resource_version < oldest:
            raise Expired(resource_version, oldest)
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
