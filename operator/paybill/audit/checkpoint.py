"""Where the chain's head and its seal key are kept outside its database, so that a database that lost its tail
(a crash losing acknowledged commits, a restore from an earlier copy) cannot lose the head with it, and someone who
can write the database cannot seal a record: in a cluster a ConfigMap (the head) and a Secret (the seal) in the
operator's namespace, which outlive the operator's Pod (its state directory may be an emptyDir); else files in the
operator's state directory (a local run). The checkpoint itself has no MAC: its worth is that it is somewhere
else; the chain's hashes bind every record to it.

A store never lowers a chain's head (a late writer cannot undo a newer checkpoint). It keeps one seal, for one
chain, and never replaces it: the first one made is the one every writer and reader uses, and a database whose
chain id is another is refused (ChainReplaced), never sealed anew."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from ..kubeclient import Kube, KubeError
from .chain import ChainReplaced, Head, Seal

CONFIGMAP = "paybill-audit-checkpoint"
SEAL_SECRET = "paybill-audit-seal"
SEAL_FILE = "seal.json"
KEY_BYTES = 32
WRITE_ATTEMPTS = 5
CHAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # the log's id, from its database: a file name only if plain


class CheckpointUnavailable(RuntimeError):
    """The checkpoint could not be read or written (nothing about the chain is known from it)."""


class CheckpointStore(Protocol):
    def load(self, chain: str) -> Head | None:
        """The head checkpointed for `chain`; None if none was."""

    def save(self, head: Head) -> None:
        """Keep `head`, unless the store already holds a later one of its chain."""

    def load_seal(self) -> Seal | None:
        """The store's seal; None if it has none."""

    def seal(self, chain: str, since: int, foreign: tuple[tuple[int, int], ...], prefix: str) -> Seal:
        """The store's seal: made now, with a new key, for `chain` from record `since` (with the records before it
        sealed under another key, `foreign`, and the digest of all before it, `prefix`), if the store has none;
        ChainReplaced if it seals another chain."""


def kept_seal(found: Seal, chain: str) -> Seal:
    """`found`, the store's seal, if it is `chain`'s."""
    if found.chain != chain:
        raise ChainReplaced(chain, found.chain)
    return found


def new_seal(chain: str, since: int, foreign: tuple[tuple[int, int], ...], prefix: str) -> Seal:
    return Seal(chain, secrets.token_bytes(KEY_BYTES), since, foreign, prefix)


class FileCheckpoint:
    """`<directory>/<chain>.json` (0600 in a 0700 directory the operator's user owns), replaced atomically and
    synced, under a lock on the directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def load(self, chain: str) -> Head | None:
        try:
            text = self._path(chain).read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read the audit checkpoint in {self.directory}: {exc}") from None
        try:
            return _parse(chain, json.loads(text))
        except ValueError:
            raise CheckpointUnavailable(f"the audit checkpoint {self._path(chain)} is not JSON") from None

    def save(self, head: Head) -> None:
        try:
            with self._locked():
                current = self.load(head.chain)
                if current is not None and current.seq >= head.seq:
                    return
                self._replace(self._path(head.chain), json.dumps(_fields(head)))
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot write the audit checkpoint in {self.directory}: {exc}") from None

    def load_seal(self) -> Seal | None:
        """`<directory>/seal.json`, 0600 like the checkpoint."""
        path = self.directory / SEAL_FILE
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot read the audit seal in {self.directory}: {exc}") from None
        try:
            return _parse_seal(json.loads(text))
        except ValueError:
            raise CheckpointUnavailable(f"the audit seal {path} is not JSON") from None

    def seal(self, chain: str, since: int, foreign: tuple[tuple[int, int], ...], prefix: str) -> Seal:
        try:
            with self._locked():
                found = self.load_seal()
                if found is not None:
                    return kept_seal(found, chain)
                made = new_seal(chain, since, foreign, prefix)
                self._replace(self.directory / SEAL_FILE, json.dumps(_seal_fields(made)))
                return made
        except OSError as exc:
            raise CheckpointUnavailable(f"cannot write the audit seal in {self.directory}: {exc}") from None

    def _path(self, chain: str) -> Path:
        if not CHAIN_ID.fullmatch(chain):
            raise CheckpointUnavailable(f"not an audit chain id: {chain!r}")
        return self.directory / f"{chain}.json"

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = self.directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise CheckpointUnavailable(f"{self.directory} is not a private directory of the operator's user")
        descriptor = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    def _replace(self, path: Path, text: str) -> None:
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
        directory = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)


class ConfigMapCheckpoint:
    """ConfigMap `paybill-audit-checkpoint` in `namespace`: one chain's head (the operator's database's)."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace

    def load(self, chain: str) -> Head | None:
        found = self._get()
        return _parse(chain, (found or {}).get("data") or {})

    def save(self, head: Head) -> None:
        for _ in range(WRITE_ATTEMPTS):
            found = self._get()
            current = _parse(head.chain, (found or {}).get("data") or {})
            if current is not None and current.seq >= head.seq:
                return
            try:
                if found is None:
                    self.kube.create(self._manifest(head))
                else:  # the resourceVersion makes the write conditional: a concurrent writer means read again
                    meta = {"resourceVersion": found["metadata"]["resourceVersion"]}
                    patch = {"metadata": meta, "data": _fields(head)}
                    self.kube.merge_patch("v1", "configmaps", CONFIGMAP, patch, self.namespace)
                return
            except KubeError as exc:
                if exc.status != 409:
                    raise CheckpointUnavailable(f"cannot write the audit checkpoint: {exc}") from None
        raise CheckpointUnavailable(f"the audit checkpoint kept changing under {WRITE_ATTEMPTS} writes")

    def _get(self) -> dict[str, Any] | None:
        try:
            return self.kube.get("v1", "configmaps", CONFIGMAP, self.namespace)
        except KubeError as exc:
            raise CheckpointUnavailable(f"cannot read the audit checkpoint: {exc}") from None

    def load_seal(self) -> Seal | None:
        """Secret `paybill-audit-seal` in the namespace: the seal of one chain (the operator's database's)."""
        found = self._get_seal()
        if found is None:
            return None
        try:
            fields = {k: base64.b64decode(v).decode() for k, v in (found.get("data") or {}).items()}
        except ValueError:
            raise CheckpointUnavailable(f"the audit seal (Secret {SEAL_SECRET}) is malformed") from None
        return _parse_seal(fields)

    def seal(self, chain: str, since: int, foreign: tuple[tuple[int, int], ...], prefix: str) -> Seal:
        found = self.load_seal()
        if found is None:
            try:
                made = new_seal(chain, since, foreign, prefix)
                self.kube.create(self._seal_manifest(made))  # never an update: a seal is never replaced
                return made
            except KubeError as exc:
                if exc.status != 409:
                    raise CheckpointUnavailable(f"cannot write the audit seal: {exc}") from None
            found = self.load_seal()  # a writer that raced this one made it
            if found is None:
                raise CheckpointUnavailable("the audit seal was made and deleted at once")
        return kept_seal(found, chain)

    def _get_seal(self) -> dict[str, Any] | None:
        try:
            return self.kube.get("v1", "secrets", SEAL_SECRET, self.namespace)
        except KubeError as exc:
            raise CheckpointUnavailable(f"cannot read the audit seal: {exc}") from None

    def _seal_manifest(self, seal: Seal) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": SEAL_SECRET,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "paybill"},
            },
            "type": "Opaque",
            "data": _encoded(_seal_fields(seal)),
        }

    def _manifest(self, head: Head) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": CONFIGMAP,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "paybill"},
            },
            "data": _fields(head),
        }


def _seal_fields(seal: Seal) -> dict[str, str]:
    return {
        "chain": seal.chain,
        "key": seal.key.hex(),
        "since": str(seal.since),
        "foreign": json.dumps([list(span) for span in seal.foreign]),
        "prefix": seal.prefix,
    }


def _encoded(fields: dict[str, str]) -> dict[str, str]:
    return {key: base64.b64encode(value.encode()).decode() for key, value in fields.items()}


def _parse_seal(fields: object) -> Seal:
    if not isinstance(fields, dict):
        raise CheckpointUnavailable("the audit seal is malformed: not a mapping")
    try:
        chain, key, since = str(fields["chain"]), bytes.fromhex(str(fields["key"])), int(fields["since"])
        foreign = tuple((int(first), int(last)) for first, last in json.loads(fields.get("foreign") or "[]"))
        prefix = str(fields["prefix"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointUnavailable(f"the audit seal is malformed: {exc!r}") from None
    if len(key) != KEY_BYTES or since < 1 or not CHAIN_ID.fullmatch(chain):
        raise CheckpointUnavailable(
            "the audit seal is malformed: a key of the wrong length, no first record or no chain"
        )
    return Seal(chain, key, since, foreign, prefix)


def _fields(head: Head) -> dict[str, str]:
    return {"chain": head.chain, "seq": str(head.seq), "hash": head.hash}


def _parse(chain: str, fields: object) -> Head | None:
    """The head in `fields` if it is `chain`'s (another chain's checkpoint says nothing about this one)."""
    if not isinstance(fields, dict) or fields.get("chain") != chain:
        return None
    try:
        return Head(chain, int(fields["seq"]), str(fields["hash"]))
    except (KeyError, ValueError) as exc:
        raise CheckpointUnavailable(f"the audit checkpoint is malformed: {exc}") from None
