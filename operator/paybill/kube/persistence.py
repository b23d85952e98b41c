"""The emulated API server's state on disk (etcd's role): a snapshot and an append-only journal of writes, and
the server's credentials, in a private state directory.

``store.snapshot`` holds every object and the revision it was taken at (written to a temporary file, fsynced and
renamed over the old one); ``store.journal`` holds one JSON line per write after it. A record is written
(``os.write`` on an O_APPEND descriptor) before watchers hear of the write, so a killed server loses nothing it
announced; ``sync`` fdatasyncs in a thread before the write is answered, several writes sharing one fsync. On
open, the snapshot and the journal are read (a torn last line, a write cut short by a crash, is dropped), and
a new snapshot replaces both, so the journal only ever holds what happened since the server started.
``credentials.json`` keeps the CA, the serving key and the tokens, so kubeconfigs survive a restart as they do
with a kube-apiserver's PKI directory.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SNAPSHOT = "store.snapshot"
JOURNAL = "store.journal"
CREDENTIALS = "credentials.json"
PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

Key = tuple[str, str]  # (group, plural)


class StateDirError(Exception):
    """A state directory the emulator refuses to use, or one it cannot read back."""


def claim_state_dir(directory: Path) -> Path:
    """Make the directory (0700) or accept an existing one only if it is a real directory (not a link), owned by
    this user and writable by no one else: the objects in it include Secrets."""
    if directory.is_symlink():
        raise StateDirError(f"emulator state directory {directory} is a symbolic link; give the real path")
    directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode):
        raise StateDirError(f"emulator state directory {directory} is not a directory")
    if info.st_uid != os.geteuid():
        raise StateDirError(f"emulator state directory {directory} belongs to uid {info.st_uid}, not to this user")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise StateDirError(f"emulator state directory {directory} is writable by others; use a private one")
    os.chmod(directory, PRIVATE_DIR)
    return directory


def _open_private(path: Path, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a crash leaves either the old or the new content (0600)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = _open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def read_private(path: Path) -> bytes | None:
    """The content of a file in the state directory (None if absent); a link is refused."""
    try:
        descriptor = _open_private(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StateDirError(f"cannot read {path}: {exc}") from None
    with os.fdopen(descriptor, "rb") as file:
        return file.read()


@dataclass(frozen=True)
class Record:
    """One write: the revision it made, ADDED/MODIFIED/DELETED, the collection and the object."""

    revision: int
    type: str
    key: Key
    object: dict[str, Any]

    def line(self) -> bytes:
        record = {"rv": self.revision, "type": self.type, "key": list(self.key), "object": self.object}
        return json.dumps(record, separators=(",", ":")).encode() + b"\n"


@dataclass
class Loaded:
    """What a state directory held: the newest revision and every live object by collection."""

    revision: int = 1
    objects: dict[Key, dict[tuple[str | None, str], dict[str, Any]]] = field(default_factory=dict)

    def apply(self, record: Record) -> None:
        meta = record.object["metadata"]
        objects = self.objects.setdefault(record.key, {})
        if record.type == "DELETED":
            objects.pop((meta.get("namespace"), meta["name"]), None)
        else:
            objects[(meta.get("namespace"), meta["name"])] = record.object
        self.revision = max(self.revision, record.revision)

    def items(self) -> Iterator[tuple[Key, dict[str, Any]]]:
        for key, objects in self.objects.items():
            for obj in objects.values():
                yield key, obj


def _journal_records(data: bytes, path: Path) -> Iterator[Record]:
    lines = data.split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line:
            continue
        try:
            raw = json.loads(line)
            yield Record(int(raw["rv"]), str(raw["type"]), (raw["key"][0], raw["key"][1]), raw["object"])
        except (ValueError, KeyError, IndexError, TypeError):
            if number == len(lines):  # the last line without its newline: a write a crash cut short
                return
            raise StateDirError(f"{path}: line {number} is not a journal record; the state cannot be read") from None


def load(directory: Path) -> Loaded:
    """The objects and the newest revision in a state directory (nothing yet: revision 1, no objects)."""
    loaded = Loaded()
    snapshot = read_private(directory / SNAPSHOT)
    if snapshot is not None:
        try:
            content = json.loads(snapshot)
            loaded.revision = int(content["revision"])
            for entry in content["objects"]:
                loaded.apply(Record(0, "ADDED", (entry["key"][0], entry["key"][1]), entry["object"]))
        except (ValueError, KeyError, IndexError, TypeError):
            raise StateDirError(f"{directory / SNAPSHOT} is not an emulator snapshot") from None
    snapshot_revision = loaded.revision if snapshot is not None else 0
    for record in _journal_records(read_private(directory / JOURNAL) or b"", directory / JOURNAL):
        if record.revision > snapshot_revision:  # older ones: already in the snapshot (a crash before truncation)
            loaded.apply(record)
    return loaded


class Journal:
    """The append-only journal of a state directory, with the snapshot it starts from."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._descriptor = _open_private(directory / JOURNAL, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        self.records = 0  # since the last snapshot
        self._written = 0
        self._synced = 0
        self._syncing: asyncio.Future[None] | None = None

    def append(self, record: Record) -> None:
        line = record.line()
        if os.write(self._descriptor, line) != len(line):
            raise OSError(f"short write to {self.directory / JOURNAL}")
        self.records += 1
        self._written += 1

    def snapshot(self, revision: int, objects: Iterable[tuple[Key, dict[str, Any]]]) -> None:
        """Write every object as the new snapshot, then empty the journal (its records are in the snapshot)."""
        content = {"revision": revision, "objects": [{"key": list(key), "object": obj} for key, obj in objects]}
        write_atomically(self.directory / SNAPSHOT, json.dumps(content, separators=(",", ":")).encode())
        os.ftruncate(self._descriptor, 0)
        os.fsync(self._descriptor)
        self.records = 0
        self._synced = self._written

    async def sync(self) -> None:
        """Return once every record appended so far is on disk; concurrent callers share one fdatasync."""
        target = self._written
        while self._synced < target:
            if self._syncing is None:
                self._syncing = asyncio.ensure_future(self._sync_once())
            await asyncio.shield(self._syncing)

    async def _sync_once(self) -> None:
        written = self._written
        try:
            await asyncio.to_thread(os.fdatasync, self._descriptor)
            self._synced = max(self._synced, written)
        finally:
            self._syncing = None

    def close(self) -> None:
        if self._descriptor >= 0:
            os.fsync(self._descriptor)
            os.close(self._descriptor)
            self._descriptor = -1
