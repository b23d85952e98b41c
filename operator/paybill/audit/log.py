"""The hash-chained audit log in PostgreSQL (the chain itself: chain.py), made durable against the database:

- after each commit the chain's head is checkpointed outside the database (checkpoint.py), so `verify` sees a
  tail the database lost ("truncated: N records missing after seq X");
- with a checkpoint store, records are sealed (hash format 3: an HMAC under the chain's seal key, kept in the store
  and made by the first writer that finds none), so that a record edited in the database cannot be sealed again;
- a record that cannot be written (the database unreachable) waits in memory, at most `buffer_limit` of them,
  and is written in order, still chained, by a background retry (every `retry_interval`) or by an append
  that finds the buffer full; meanwhile appends do not touch the database (no wait). Past the bound an append
  raises `AuditUnavailable` and the record is not kept; the chain then says how many were dropped (a
  `RecordsDropped` record). What waits is lost if the operator stops before the database is back (its log
  says how many).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader

from ..database import DatabaseUnavailable
from ..database.ownership import create_idempotently
from ..errors import first_line
from .chain import (
    CURRENT_FORMAT,
    LEGACY_FORMAT,
    SEALED_FORMAT,
    AuditRecord,
    ChainBroken,
    ChainIdMissing,
    Head,
    RecordsMissing,
    Seal,
    TableAltered,
    chain_after,
    check_chain,
    hash_of,
    prefix_digest,
    record_hash,
    spans,
)
from .checkpoint import CheckpointStore, CheckpointUnavailable, kept_seal

BUFFER_LIMIT = 10_000  # records waiting for the database: about 10-20 MB at most (details are small)
# What each record's hash covers (chain.py). Its default, format 1, is what an operator that knows no formats (an
# older replica, during an upgrade) writes: it hashes its records that way.
FORMAT_COLUMN = f"hash_format integer NOT NULL DEFAULT {LEGACY_FORMAT}"
RETRY_INTERVAL = 2.0  # seconds between background attempts while records wait
ESCALATE_AFTER_S = 60  # an outage this long is said again at ERROR
# The database cannot take records now (down, a lock timeout, read-only, out of disk...), or the seal key cannot be
# read: they wait. What no database could ever store is refused before it waits (`storable`), so nothing that waits
# blocks the rest.
WRITE_FAILURES = (DatabaseUnavailable, psycopg.Error, CheckpointUnavailable, ChainBroken)
MISSING = (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName)
INSERT = (
    "INSERT INTO paybill.audit_log (seq, at, kind, name, event, details, previous, hash, hash_format) "
    "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
)
# `at` as hashes cover it: UTC, microseconds, whatever the session's TimeZone and DateStyle; NULL for an infinite time.
AT_TEXT = (
    "to_char({0} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') "
    "|| CASE WHEN extract(year FROM {0} AT TIME ZONE 'UTC') < 1 THEN ' BC' ELSE '' END"
)

# Every statement of the log runs with names resolved in pg_catalog first: a superuser's schema ahead of it on the
# search_path could otherwise redefine the clock or the time format that hashes cover.
# Times as hashes cover them are UTC, whatever the database's TimeZone; a write (a trigger of a superuser's could
# sleep in it) gives up after WRITE_TIMEOUT and its records wait, as in any outage.
PINNED = "SET LOCAL search_path = pg_catalog, pg_temp; SET LOCAL TimeZone = 'UTC'"
WRITE_TIMEOUT = "SET LOCAL statement_timeout = '10s'"
# The log's columns as Paybill makes them (hash_format: from the first write of a version that knows formats).
COLUMNS = {
    "seq": "bigint",
    "at": "timestamp with time zone",
    "kind": "text",
    "name": "text",
    "event": "text",
    "details": "jsonb",
    "previous": "text",
    "hash": "text",
    "hash_format": "integer",
}
logger = logging.getLogger(__name__)


class AuditUnavailable(DatabaseUnavailable):
    """The record was not kept: the database is unreachable and the buffer is full."""


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    event: str
    details: dict[str, Any]


class AuditLog:
    """Appends under a lock on the log table itself (only the operator can take it: no tenant may even
    connect to its database), so concurrent writers still form one chain; in this process, appends, flushes and
    checkpoint writes happen one at a time, so a checkpoint is written before the next record is.

    Without a `checkpoint` store (a reader, or a test) nothing is buffered beyond this and `verify` checks the
    chain alone."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection],
        checkpoint: CheckpointStore | None = None,
        *,
        buffer_limit: int = BUFFER_LIMIT,
        retry_interval: float = RETRY_INTERVAL,
    ) -> None:
        self._connect = connect
        self._checkpoint = checkpoint
        self._limit, self._interval = buffer_limit, retry_interval
        self._chain: str | None = None
        self._formats = False  # the log has its hash_format column (made by the first write of this version)
        self._head: Head | None = None  # the latest head known: committed here, or checkpointed before
        self._seal: Seal | None = None  # the chain's seal, once read from (or made in) the checkpoint store
        self._saved = 0  # the seq last checkpointed by this process
        self._waiting: deque[Entry] = deque()
        self.dropped = 0  # records refused since the buffer filled; written as one RecordsDropped record
        self._lock = threading.RLock()
        self._outage: threading.Event | None = None  # set while a background retry runs; set() ends it
        self._failure = ""  # why the last write failed
        self._closing = threading.Event()

    @property
    def pending(self) -> int:
        """Records waiting for the database."""
        return len(self._waiting)

    @property
    def chain(self) -> str:
        """This log's id (kept in its database): what its checkpoint is filed under."""
        if self._chain is None:
            self._setup(self._connect())
        assert self._chain is not None
        return self._chain

    def _setup(self, conn: psycopg.Connection) -> None:
        if self._chain is not None:
            return
        if not _log_exists(conn):  # DDL only the first time: concurrent REVOKEs fail ("tuple concurrently updated")
            # a log dropped under a sealing store is made again as the chain the store seals, which goes on
            seal = self._checkpoint.load_seal() if self._checkpoint is not None else None
            try:
                create_idempotently(conn, functools.partial(_create_log, chain=seal.chain if seal else None))
            except psycopg.errors.InternalError_:
                if not _log_exists(conn):  # not that race, then
                    raise
        row = conn.execute("SELECT id FROM paybill.audit_chain").fetchone()
        if row is None:  # deleted: never by Paybill
            raise ChainIdMissing()
        self._chain = str(row[0])

    def append(self, kind: str, name: str, event: str, details: dict[str, Any]) -> AuditRecord | None:
        """The record, written and checkpointed; None if it waits for the database (AuditUnavailable if it
        cannot even wait; ValueError, and nothing kept, if PostgreSQL could never store it)."""
        entry = storable(kind, name, event, details)
        with self._lock:
            if len(self._waiting) >= self._limit:
                self._flush()
            if len(self._waiting) >= self._limit:
                self.dropped += 1
                logger.error("audit record %s %s %s not kept: %d records wait already", kind, name, event, self._limit)
                raise AuditUnavailable(
                    f"the audit log's database is unreachable and {self._limit} records are waiting: this record "
                    "is not kept (the chain will say how many were dropped)"
                )
            self._waiting.append(entry)
            if self._outage is not None:  # the background retry writes it, after those before it; no wait here
                return None
            written = self._flush()
            return written[-1] if written else None

    def flush(self) -> int:
        """Write what waits now if the database answers; the number of records still waiting."""
        with self._lock:
            self._flush()
            return len(self._waiting)

    def close(self) -> None:
        """A last attempt to write what waits; what cannot be is reported (it is lost with this process)."""
        self._closing.set()
        left = self.flush()
        if self._outage is not None:
            self._outage.set()  # the background retry ends
        if left or self.dropped:
            logger.error("audit log: %d records never reached the database (and %d were dropped)", left, self.dropped)

    def _flush(self) -> list[AuditRecord]:
        """Everything waiting, in one transaction, then the checkpoint; [] and a background retry if the database
        cannot take it now."""
        batch = list(self._waiting)
        if self.dropped:
            batch.append(Entry("AuditLog", "buffer", "RecordsDropped", {"count": self.dropped, "bound": self._limit}))
        written: list[AuditRecord] = []
        if batch:
            try:
                written = self._write(batch)
            except WRITE_FAILURES as exc:
                self._failure = first_line(exc)
                if isinstance(exc, MISSING):  # the log was dropped or the database replaced: set up again
                    self._chain, self._seal = None, None
                if self._outage is None and not self._closing.is_set():
                    logger.log(
                        logging.ERROR if isinstance(exc, ChainBroken) else logging.WARNING,
                        "audit log: the database cannot take records, %d wait: %s",
                        len(batch),
                        first_line(exc),
                    )
                    self._outage = threading.Event()
                    threading.Thread(target=self._retry, args=(self._outage,), name="audit-flush", daemon=True).start()
                return []
            self._waiting.clear()
            self.dropped = 0
            if self._outage is not None:
                logger.info("audit log: the database is back, %d records written", len(written))
                self._outage.set()
                self._outage = None
        self._save_checkpoint()
        return written

    def _retry(self, over: threading.Event) -> None:
        """Until the outage is over (a flush wrote everything) or the log closes: try again every interval. An
        outage that outlasts ESCALATE_AFTER_S is said again at ERROR (once): records that wait are at risk."""
        started, escalated = time.monotonic(), False
        while not over.wait(self._interval):
            if not escalated and time.monotonic() - started >= ESCALATE_AFTER_S and self._waiting:
                escalated = True
                logger.error(
                    "audit log: %d records have waited %d s; the database still cannot take them: %s",
                    len(self._waiting),
                    ESCALATE_AFTER_S,
                    self._failure,
                )
            try:
                self._connect()  # outside the lock: an append never waits on a connection attempt that hangs
            except WRITE_FAILURES as exc:
                self._failure = first_line(exc)
                continue
            try:
                self.flush()
            except Exception:  # a bug must not end the retries silently: what waits would wait for ever
                logger.exception("audit log: writing the records that wait failed")

    def _write(self, batch: list[Entry]) -> list[AuditRecord]:
        conn = self._connect()
        self._setup(conn)
        assert self._chain is not None
        written = []
        with conn.transaction():
            conn.execute(PINNED)
            conn.execute(WRITE_TIMEOUT)
            if not self._formats:
                _add_formats(conn)
            _check_table(conn)
            conn.execute("LOCK TABLE paybill.audit_log IN SHARE ROW EXCLUSIVE MODE")  # appenders wait, readers not
            row = conn.execute("SELECT seq, hash FROM paybill.audit_log ORDER BY seq DESC LIMIT 1").fetchone()
            last = Head(self._chain, row[0], row[1]) if row else None
            known = self._known_head()
            if last is not None and known is not None and last.seq == known.seq and last.hash != known.hash:
                # the record this log (or its checkpoint) knows at the head is not the one there: never chain onto it
                raise ChainBroken(last.seq, "differs from the head this log knows (its checkpoint): not written after")
            seq, previous = chain_after(last, known)
            after = last.seq if last is not None else 0
            if seq > after + 1:
                logger.error(
                    "audit log: the database lost records %d to %d (its checkpoint is ahead)", after + 1, seq - 1
                )
            now = conn.execute(f"SELECT t, {AT_TEXT.format('t')} FROM clock_timestamp() AS t").fetchone()
            assert now is not None
            at, at_text = now
            seal = self._sealing(conn, seq, known)
            if seal is not None and seq < seal.since:  # behind its seal: it would write plain hashes, never
                raise ChainBroken(seq, f"the log is behind its seal (which begins at record {seal.since}): not written")
            if seal is not None and last is not None:
                _check_tail(conn, last, known, seal)
            key = seal.key if seal is not None else None
            hash_format = SEALED_FORMAT if key is not None else CURRENT_FORMAT
            for entry in batch:
                digest = record_hash(
                    previous, entry.kind, entry.name, entry.event, entry.details, hash_format, at_text, key
                )
                record = AuditRecord(
                    seq, entry.kind, entry.name, entry.event, entry.details, previous, digest, at_text, hash_format
                )
                _insert(conn, record, at)
                written.append(record)
                seq, previous = seq + 1, digest
        self._formats = True
        self._head = Head(self._chain, written[-1].seq, written[-1].hash)
        return written

    def _sealing(self, conn: psycopg.Connection, seq: int, known: Head | None) -> Seal | None:
        """The chain's seal (made now, sealing from `seq`, if the store has none); None without a store;
        ChainReplaced if the store seals another chain. `known`: the head this log knows (`_known_head`)."""
        if self._seal is None and self._checkpoint is not None and self._chain is not None:
            found = self._checkpoint.load_seal()
            if found is None:  # the seal freezes what is before it; records sealed already are named in it
                before = [_record(row) for row in _select_records(conn, "seq < %s", (seq,))]
                foreign = spans([r.seq for r in before if r.hash_format == SEALED_FORMAT])
                prefix = prefix_digest(before)
                # never freeze a chain that does not verify as it is (against its checkpoint too): that would vouch
                # for whatever was done to it before the seal
                with contextlib.suppress(RecordsMissing):  # a lost tail (a restore): verify reports the gap
                    check_chain(before, known, Seal(self._chain, b"", seq, foreign, prefix))
                if foreign:  # legitimately only after a seal was lost (or a test's other store): say so loudly
                    logger.error(
                        "audit log: sealing from record %d; records %s say they are sealed under a key this store "
                        "does not hold (its seal was lost, or they were relabelled): verify checks only their place",
                        seq,
                        ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in foreign),
                    )
                found = self._checkpoint.seal(self._chain, seq, foreign, prefix)
            self._seal = kept_seal(found, self._chain)
        return self._seal

    def _known_head(self) -> Head | None:
        """The later of the head this process committed last and the checkpoint's, read at every write: another
        writer sharing the store may have gone further, and a tail of theirs deleted must stay a gap, not be written
        over (unreadable: this process's own head; the checkpoint, never lowered, still shows the gap to `verify`)."""
        stored = None
        if self._checkpoint is not None and self._chain is not None:
            try:
                stored = self._checkpoint.load(self._chain)
            except CheckpointUnavailable as exc:
                logger.warning("audit log: %s", exc)
        heads = [head for head in (self._head, stored) if head is not None]
        return max(heads, key=lambda head: head.seq) if heads else None

    def _save_checkpoint(self) -> None:
        head = self._head
        if self._checkpoint is None or head is None or head.seq <= self._saved:
            return
        try:
            self._checkpoint.save(head)
        except CheckpointUnavailable as exc:
            logger.warning(
                "audit log: checkpoint at record %d not written, retried at the next append: %s", head.seq, exc
            )
            return
        self._saved = head.seq

    def records(self, kind: str | None = None, name: str | None = None) -> list[AuditRecord]:
        rows = self._read(
            "", "(%s::text IS NULL OR kind = %s) AND (%s::text IS NULL OR name = %s)", (kind, kind, name, name)
        )
        return [_record(row) for row in rows]

    def timed_records(
        self, since: datetime.datetime | None = None, until: datetime.datetime | None = None
    ) -> list[tuple[AuditRecord, datetime.datetime]]:
        """Records with the time each was written (`at`: covered by the hash from format 2 on), in [since, until)."""
        rows = self._read(
            ", at",
            "(%s::timestamptz IS NULL OR at >= %s) AND (%s::timestamptz IS NULL OR at < %s)",
            (since, since, until, until),
        )
        return [(_record(row[:-1]), row[-1]) for row in rows]

    def _read(self, extra: str, where: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        """The rows of the records `where` picks (`_record_columns`, then `extra`), in order."""
        conn = self._connect()
        self._setup(conn)
        with conn.transaction():
            _check_table(conn)  # its names are qualified: it needs no pinning
            return _select_records(conn, where, params, extra)

    def verify(self) -> int:
        """Walk the whole chain and hold it against the checkpoint and the seal; returns its length, or raises
        ChainBroken at the first bad record (RecordsMissing when records are gone, a lost tail included), SealNeeded
        for a sealed chain and no store to read its seal from."""
        records = self.records()
        checkpoint = self._checkpoint.load(self.chain) if self._checkpoint is not None else None
        seal = self._checkpoint.load_seal() if self._checkpoint is not None else None
        if seal is not None:
            kept_seal(seal, self.chain)
        return check_chain(records, checkpoint, seal)


def storable(kind: str, name: str, event: str, details: dict[str, Any]) -> Entry:
    """The entry as it will be stored (details through JSON, numbers as jsonb gives them back), or ValueError if
    PostgreSQL would refuse it: a NUL character in text, a NaN, a lone surrogate."""
    try:
        normal = _as_jsonb_reads(json.loads(json.dumps(details, default=str, allow_nan=False)))
    except RecursionError:
        raise ValueError("an audit record's details cannot nest this deeply") from None
    texts = [kind, name, event, *_strings(normal)]
    for text in texts:
        text.encode()  # UnicodeEncodeError (a ValueError) for a lone surrogate
        if "\x00" in text:
            raise ValueError("an audit record cannot hold a NUL character")
    return Entry(kind, name, event, normal)


def _as_jsonb_reads(value: Any) -> Any:
    """`value` as it reads back from jsonb, so that the hash of what is written is the hash of what is read: jsonb
    keeps a number as numeric and prints it without an exponent and without a negative zero, so a float Python
    writes with an exponent from 1e16 up (all integral) reads back as an integer, and -0.0 as 0.0."""
    if isinstance(value, float):
        if value == 0.0:
            return 0.0
        return int(value) if abs(value) >= 1e16 else value
    if isinstance(value, dict):
        return {key: _as_jsonb_reads(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_jsonb_reads(item) for item in value]
    return value


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [text for key, item in value.items() for text in (key, *_strings(item))]
    if isinstance(value, list):
        return [text for item in value for text in _strings(item)]
    return []


def _insert(conn: psycopg.Connection, record: AuditRecord, at: datetime.datetime) -> None:
    details = json.dumps(record.details)
    row = (record.seq, at, record.kind, record.name, record.event, details, record.previous, record.hash)
    if conn.execute(INSERT, (*row, record.hash_format)).rowcount != 1:  # a rule or trigger of the database's own
        raise ChainBroken(record.seq, "the database did not store it (a rule or trigger dropped it): not written")


def _check_tail(conn: psycopg.Connection, last: Head, known: Head | None, seal: Seal) -> None:
    """Before chaining onto `last`: the records after the head this log knows (another replica's, or only `last` when
    it knows none) follow it and are sealed with the chain's key, so that no record is ever sealed onto a head of
    someone else's making."""
    start = known.seq if known is not None and known.seq < last.seq else last.seq - 1
    previous = known.hash if known is not None and known.seq == start else None
    for record in map(_record, _select_records(conn, "seq > %s", (start,))):
        if previous is not None and record.previous != previous:
            raise ChainBroken(record.seq, "does not follow the record before it: nothing is written after it")
        try:
            sealed = record.hash_format == SEALED_FORMAT and hash_of(record, seal.key) == record.hash
        except RecursionError:
            sealed = False
        if record.seq >= seal.since and not sealed:
            raise ChainBroken(record.seq, "is not sealed with the chain's key: nothing is written after it")
        previous = record.hash


def _record_columns(conn: psycopg.Connection) -> str:
    """The columns of an AuditRecord; a log no writer of hash formats has touched yet holds format 1 only (readers
    never change the log)."""
    formats = "hash_format" if _has_formats(conn) else str(LEGACY_FORMAT)
    return f"seq, kind, name, event, details, previous, hash, {AT_TEXT.format('at')}, {formats}"


class _JsonbText(Loader):
    """jsonb as the server's own output function spells it (no cast a superuser could have defined), parsed by
    `_record`, which names a record it cannot read."""

    def load(self, data: Buffer) -> str:
        return bytes(data).decode()


def _select_records(
    conn: psycopg.Connection, where: str, params: tuple[Any, ...], extra: str = ""
) -> list[tuple[Any, ...]]:
    """The rows (`_record_columns`, then `extra`) of the records `where` picks, in order, read in the transaction open
    on `conn` with names resolved in pg_catalog first (no function of the database's own shadows clock_timestamp or
    to_char), jsonb as text. The caller has checked the table (`_check_table`)."""
    conn.execute(PINNED)
    cursor = conn.cursor()
    cursor.adapters.register_loader("jsonb", _JsonbText)
    query = f"SELECT {_record_columns(conn)}{extra} FROM paybill.audit_log WHERE {where} ORDER BY seq"
    return cursor.execute(query, params).fetchall()


def _record(row: tuple[Any, ...]) -> AuditRecord:
    """A record from its row (`_record_columns`); ChainBroken naming it if its details cannot be read back."""
    seq, kind, name, event, details, *rest = row
    try:
        parsed = json.loads(details, parse_float=_written_float)
    except RecursionError:  # jsonb nests deeper than Python's parser follows: never a record Paybill wrote
        raise ChainBroken(seq, "its details cannot be read (nested too deeply)") from None
    except (ValueError, TypeError) as exc:  # a number longer than Python reads (4300 digits): nor is this
        raise ChainBroken(seq, f"its details cannot be read ({exc})") from None
    return AuditRecord(seq, kind, name, event, parsed, *rest)


def _written_float(text: str) -> float:
    """A jsonb number with a fraction, as the float Paybill wrote it from. What `storable` writes is always a float's
    value at the scale json.dumps spells it (jsonb keeps both); anything else (a digit changed below what a float
    holds, a string made a number, 1.5 written 1.50) is a ValueError: a record that cannot be read."""
    value = float(text)
    exact, written = Decimal(text), Decimal(repr(value))
    if exact != written or exact.as_tuple().exponent != written.as_tuple().exponent:
        raise ValueError(f"the number {text[:40]} is not one Paybill writes")
    return value


def _check_table(conn: psycopg.Connection) -> None:
    """TableAltered unless the log's columns have the types and NOT NULL Paybill gave them: a column retyped (a
    timestamptz made a timestamp, read in a shifted TimeZone) changes what is read without changing what is hashed."""
    rows = conn.execute(
        "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull "
        "FROM pg_catalog.pg_attribute a WHERE a.attrelid = 'paybill.audit_log'::pg_catalog.regclass "
        "AND a.attnum > 0 AND NOT a.attisdropped"
    ).fetchall()
    found = {name: (kind, not_null) for name, kind, not_null in rows}
    for name, kind in COLUMNS.items():
        if name == "hash_format" and name not in found:
            continue  # a log no writer of hash formats has touched yet
        if found.get(name) != (kind, True):
            shown = f"{found[name][0]}{'' if found[name][1] else ', nullable'}" if name in found else "missing"
            raise TableAltered(f"column {name} is {shown}, not {kind} NOT NULL")


def _has_formats(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = 'paybill.audit_log'::regclass "
        "AND attname = 'hash_format' AND NOT attisdropped"
    ).fetchone()
    return row is not None


def _add_formats(conn: psycopg.Connection) -> None:
    """Give a log made before hash formats its column: its records are format 1's."""
    if not _has_formats(conn):
        conn.execute(f"ALTER TABLE paybill.audit_log ADD COLUMN IF NOT EXISTS {FORMAT_COLUMN}")


def _log_exists(conn: psycopg.Connection) -> bool:
    """Both tables (made, with the chain's id, in one transaction)."""
    row = conn.execute(
        "SELECT to_regclass('paybill.audit_log') IS NOT NULL AND to_regclass('paybill.audit_chain') IS NOT NULL"
    ).fetchone()
    return bool(row and row[0])


def _create_log(conn: psycopg.Connection, chain: str | None = None) -> None:
    conn.execute("CREATE SCHEMA IF NOT EXISTS paybill")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.audit_log (seq bigint PRIMARY KEY, "
        "at timestamptz NOT NULL DEFAULT now(), kind text NOT NULL, name text NOT NULL, "
        f"event text NOT NULL, details jsonb NOT NULL, previous text NOT NULL, hash text NOT NULL, {FORMAT_COLUMN})"
    )
    conn.execute("REVOKE ALL ON paybill.audit_log FROM PUBLIC")
    # The log's id: its checkpoint is filed under it, so a new database is never held to another's checkpoint.
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.audit_chain (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
        "id text NOT NULL DEFAULT gen_random_uuid()::text)"
    )
    if chain is None:
        conn.execute("INSERT INTO paybill.audit_chain DEFAULT VALUES ON CONFLICT DO NOTHING")
    else:
        conn.execute("INSERT INTO paybill.audit_chain (id) VALUES (%s) ON CONFLICT DO NOTHING", (chain,))
    conn.execute("REVOKE ALL ON paybill.audit_chain FROM PUBLIC")
