"""The chain itself, pure: a record's hash covers its content and the previous hash, so editing, dropping or
reordering any record breaks the chain from there on; a checkpoint (the head kept outside the database) shows a
tail the database lost with it. `check_chain` says which.

What a hash covers is its record's hash format, kept with the record: format 1 (records written before formats
existed) covers kind, name, event and details; format 2 also the time the record was written. Changing a record's
format breaks its hash like any edit, and a format this code does not know is a fault, never taken on trust.

Format 3 is format 2 sealed: an HMAC under the chain's seal key, which is kept outside the database with the
checkpoint. Plain hashes can be computed by anyone: someone who can write the database could edit a record and
compute every later hash again, which only the checkpoint would show (and not where). A sealed record cannot be
made again without the key. The seal says from which record on the chain is sealed: a record there that is not
sealed is a fault, so rewriting the chain in plain hashes is seen too. A store keeps the seal of one chain, named by
the chain's id: a database whose id is another is a replaced log, not a new one. Records sealed under another key
before the seal began (a seal that was lost, or another store's) are listed in the seal when it is made; only their
place in the chain can be checked, and `unchecked` names them. Any other record before the seal that says it is
sealed was relabelled, and is a fault.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

GENESIS = "0" * 64
LEGACY_FORMAT = 1  # kind, name, event, details: the time a record was written is outside its hash
TIMED_FORMAT = 2  # and the time it was written, as `at` text (UTC, microseconds)
SEALED_FORMAT = 3  # what format 2 covers, as an HMAC-SHA256 under the chain's seal key
CURRENT_FORMAT = TIMED_FORMAT  # what a log writes without a seal


@dataclass(frozen=True)
class Head:
    """The last record of a chain: its sequence number and hash. `chain` names the log (one per database)."""

    chain: str
    seq: int
    hash: str


@dataclass(frozen=True)
class Seal:
    """The chain's seal key, and the first record sealed with it: every record from `since` on must be sealed.
    `foreign`: the spans of records before `since` found sealed under another key when the seal was made."""

    chain: str
    key: bytes = field(repr=False)
    since: int
    foreign: tuple[tuple[int, int], ...] = ()
    prefix: str = ""  # `prefix_digest` of the records before `since`, as they were when the seal was made

    def knows_foreign(self, seq: int) -> bool:
        return any(first <= seq <= last for first, last in self.foreign)


def prefix_digest(records: list[AuditRecord]) -> str:
    """SHA-256 over every field of `records` (those before a seal's first record): the seal freezes them, so that
    what no hash of theirs can vouch for (a record sealed under a lost key, the links between them) is covered."""
    digest = hashlib.sha256()
    for r in records:
        fields = [r.seq, r.kind, r.name, r.event, r.details, r.previous, r.hash, r.at, r.hash_format]
        digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode() + b"\n")
    return digest.hexdigest()


def spans(seqs: list[int]) -> tuple[tuple[int, int], ...]:
    """Ascending sequence numbers as (first, last) runs."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return tuple((first, last) for first, last in runs)


@dataclass(frozen=True)
class AuditRecord:
    seq: int
    kind: str
    name: str
    event: str
    details: dict[str, Any]
    previous: str
    hash: str
    at: str | None = None  # when it was written, as its hash covers it (log.AT_TEXT); None: not read, or no time
    hash_format: int = LEGACY_FORMAT  # what the hash covers; records made without one are format 1's


class UnknownFormat(ValueError):
    def __init__(self, hash_format: int) -> None:
        super().__init__(f"hash format {hash_format} is unknown to this Paybill: the record cannot be verified")


class SealNeeded(RuntimeError):
    """Sealed records, and no seal key to check them with."""

    def __init__(self, seq: int) -> None:
        super().__init__(
            f"the chain is sealed (record {seq} on): checking it needs its seal key, kept with its checkpoint"
        )
        self.seq = seq


class ChainBroken(RuntimeError):
    def __init__(self, seq: int, message: str) -> None:
        super().__init__(f"audit record {seq}: {message}")
        self.seq = seq


class PrefixChanged(ChainBroken):
    """What was before the seal when it was made is not what is there now (no record of it can say which)."""

    def __init__(self, since: int) -> None:
        super().__init__(
            1,
            f"records 1 to {since - 1} are not as they were when the seal was made (it seals from record {since} "
            "on): one of them was edited, added or removed since",
        )


class TableAltered(ChainBroken):
    """The log's table is not as Paybill made it: what is read could differ from what was hashed."""

    def __init__(self, what: str) -> None:
        RuntimeError.__init__(self, f"the log's table was altered: {what}")
        self.seq = 0


class ChainIdMissing(ChainBroken):
    """The log's chain id (paybill.audit_chain) was deleted: nothing is written to it, and verify says so."""

    def __init__(self) -> None:
        RuntimeError.__init__(self, "the log's chain id was deleted (paybill.audit_chain is empty)")
        self.seq = 0


class ChainReplaced(ChainBroken):
    """The database's chain id is not the one the store seals: the log was replaced, or its id rewritten."""

    def __init__(self, found: str, sealed: str) -> None:
        RuntimeError.__init__(
            self,
            f"the database's audit chain is {found}, not {sealed}, the chain its checkpoint seals: the log was "
            "replaced or its id rewritten",
        )
        self.seq, self.found, self.sealed = 0, found, sealed


class RecordsMissing(ChainBroken):
    """Records are gone after `after`: the tail the checkpoint saw, or a run in the middle."""

    def __init__(self, after: int, missing: int) -> None:
        RuntimeError.__init__(
            self, f"truncated: {missing} record{'s' if missing != 1 else ''} missing after seq {after}"
        )
        self.seq, self.after, self.missing = after + 1, after, missing


def record_hash(
    previous: str,
    kind: str,
    name: str,
    event: str,
    details: dict[str, Any],
    hash_format: int = LEGACY_FORMAT,
    at: str | None = None,
    key: bytes | None = None,
) -> str:
    """The record's hash under `hash_format` (UnknownFormat for any other than 1, 2 and 3; format 3 needs `key`)."""
    fields: dict[str, Any] = {"kind": kind, "name": name, "event": event, "details": details}
    if hash_format in (TIMED_FORMAT, SEALED_FORMAT):
        fields |= {"format": hash_format, "at": at}
    elif hash_format != LEGACY_FORMAT:
        raise UnknownFormat(hash_format)
    content = f"{previous}\n{json.dumps(fields, sort_keys=True, separators=(',', ':'), default=str)}".encode()
    if hash_format == SEALED_FORMAT:
        if key is None:
            raise ValueError("a sealed record's hash needs the seal key")
        return hmac.new(key, content, hashlib.sha256).hexdigest()
    return hashlib.sha256(content).hexdigest()


def hash_of(record: AuditRecord, key: bytes | None = None) -> str:
    """What `record`'s hash must be, given the record before it (UnknownFormat if its format is unknown)."""
    return record_hash(
        record.previous, record.kind, record.name, record.event, record.details, record.hash_format, record.at, key
    )


def chain_after(last: Head | None, checkpoint: Head | None) -> tuple[int, str]:
    """(seq, previous) of the next record: after the database's last record, or after the checkpoint when the
    database lost records behind it (so the gap stays in the chain, and `check_chain` keeps reporting it)."""
    heads = [head for head in (last, checkpoint) if head is not None]
    if not heads:
        return 1, GENESIS
    head = max(heads, key=lambda h: h.seq)
    return head.seq + 1, head.hash


def check_chain(records: list[AuditRecord], checkpoint: Head | None, seal: Seal | None = None) -> int:
    """The chain's length, or ChainBroken at its first fault: a record edited, missing or out of place, the
    database behind its checkpoint (RecordsMissing), the record at the checkpoint not the one checkpointed, or a
    record from the seal's `since` on not sealed. SealNeeded: sealed records, and no `seal` to check them with."""
    if seal is None:
        sealed = next((r.seq for r in records if r.hash_format == SEALED_FORMAT), None)
        if sealed is not None:
            raise SealNeeded(sealed)
    previous, expected = GENESIS, 1
    for record in records:
        if record.seq > expected:
            raise RecordsMissing(expected - 1, record.seq - expected)
        if record.seq != expected:
            raise ChainBroken(record.seq, f"expected sequence number {expected}")
        if record.previous != previous:
            raise ChainBroken(record.seq, "does not follow the previous record")
        sealed = record.hash_format == SEALED_FORMAT
        if seal is not None and record.seq >= seal.since and not sealed:
            raise ChainBroken(record.seq, f"not sealed, though the chain is sealed from record {seal.since} on")
        foreign = sealed and seal is not None and record.seq < seal.since
        if foreign and seal is not None and not seal.knows_foreign(record.seq):
            raise ChainBroken(
                record.seq, f"marked sealed, but written before the chain's seal began (record {seal.since})"
            )
        try:
            # sealed under another key before this seal began (the seal lists it): only its place is checked
            intact = foreign or hash_of(record, seal.key if seal is not None else None) == record.hash
        except UnknownFormat as exc:
            raise ChainBroken(record.seq, str(exc)) from None
        except RecursionError:  # details nested deeper than the hash's encoder follows: never a record Paybill wrote
            raise ChainBroken(record.seq, "its details nest too deeply to be checked") from None
        if not intact:
            raise ChainBroken(record.seq, "content does not match its hash")
        if checkpoint is not None and record.seq == checkpoint.seq and record.hash != checkpoint.hash:
            raise ChainBroken(record.seq, "differs from the checkpoint")
        previous, expected = record.hash, expected + 1
    if checkpoint is not None and checkpoint.seq >= expected:
        raise RecordsMissing(expected - 1, checkpoint.seq - expected + 1)
    if seal is not None:
        try:
            frozen = prefix_digest([r for r in records if r.seq < seal.since]) == seal.prefix
        except RecursionError:
            frozen = False
        if not frozen:
            raise PrefixChanged(seal.since)
    return len(records)


def unchecked(records: list[AuditRecord], seal: Seal | None) -> list[int]:
    """The records `check_chain` could check only for their place in the chain: sealed under another key before
    `seal` began (as the seal lists them)."""
    if seal is None:
        return []
    return [
        r.seq for r in records if r.hash_format == SEALED_FORMAT and r.seq < seal.since and seal.knows_foreign(r.seq)
    ]
