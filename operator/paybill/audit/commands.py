"""`paybill audit verify | replay | export`: the reviewer's commands, over the operator's database (read only:
nothing is created or changed in it). Exit status 0: intact / nothing differs / written; 1: the chain is broken
or a decision differs; 2: the database, the checkpoint or the seal could not be read (a sealed chain is checked
only with its seal, which is kept with the checkpoint)."""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

import kubernetes
import psycopg

from ..errors import first_line
from ..kubeclient import Kube, load_config
from .chain import ChainBroken, ChainReplaced, SealNeeded
from .checkpoint import CheckpointStore, CheckpointUnavailable, ConfigMapCheckpoint, FileCheckpoint, kept_seal
from .log import AuditLog, _log_exists
from .review import belongs_to, export_line, first_break, foreign_seals, replay, untimed
from .versions import load_version


class Unreadable(RuntimeError):
    """The audit log cannot be read: no database, no log in it, or an unreadable checkpoint."""


@contextmanager
def _log(dsn: str) -> Iterator[tuple[psycopg.Connection, AuditLog]]:
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.Error as exc:
        raise Unreadable(f"cannot connect to the audit log's database: {first_line(exc)}") from None
    with conn:
        if not _log_exists(conn):
            raise Unreadable("this database holds no Paybill audit log (paybill.audit_log)")
        try:
            yield conn, AuditLog(lambda: conn)
        except ChainBroken as exc:  # replay and export: a record that cannot be read back (verify names it)
            raise Unreadable(f"{exc}: run `paybill audit verify`") from None


def checkpoint_store(directory: Path | None, namespace: str | None) -> CheckpointStore | None:
    """Where the operator keeps the chain's head: its ConfigMap in `namespace` (in a cluster; the kubeconfig or the
    in-cluster account), or the files in `directory` (a local run's <state dir>/audit); None: neither given."""
    if namespace is not None:
        try:
            load_config()
        except (kubernetes.config.ConfigException, OSError) as exc:
            raise Unreadable(f"cannot reach the cluster for the audit checkpoint: {first_line(exc)}") from None
        return ConfigMapCheckpoint(Kube(), namespace)
    return FileCheckpoint(directory) if directory is not None else None


def verify(dsn: str, store: CheckpointStore | None, out: TextIO) -> int:
    """Check the whole chain (against the checkpoint and with the seal in `store`, if given); name its first fault."""
    with _log(dsn) as (_, log):
        try:
            records = log.records()
        except ChainBroken as exc:  # a record that cannot even be read back, or no chain id at all
            where = f" at record {exc.seq}: {str(exc).split(': ', 1)[-1]}" if exc.seq else f": {exc}"
            print(f"audit chain broken{where}", file=out)
            return 1
        try:
            checkpoint = store.load(log.chain) if store is not None else None
            seal = store.load_seal() if store is not None else None
        except CheckpointUnavailable as exc:
            raise Unreadable(str(exc)) from None
        try:
            if seal is not None:
                kept_seal(seal, log.chain)
        except ChainReplaced as exc:
            print(f"audit chain broken: {exc}", file=out)
            return 1
    try:
        fault = first_break(records, checkpoint, seal)
    except SealNeeded as exc:
        where = (
            "give --checkpoint DIR or --checkpoint-namespace NS"
            if store is None
            else "the checkpoint given holds no seal: the wrong one, or its seal was deleted"
        )
        raise Unreadable(f"{exc} ({where})") from None
    if fault is not None:
        print(f"audit chain broken at {fault.describe()}", file=out)
        return 1
    against = f", up to its checkpoint at record {checkpoint.seq}" if checkpoint is not None else ""
    sealed = (
        f", sealed from record {seal.since}" if seal is not None and records and seal.since <= records[-1].seq else ""
    )
    notes = "".join(f"; {note}" for note in (foreign_seals(records, seal), untimed(records)) if note)
    print(f"audit chain intact: {len(records)} records{against}{sealed}{notes}", file=out)
    return 0


def replay_decisions(dsn: str, out: TextIO, summary: TextIO) -> int:
    """Every recorded gate decision decided again under its recorded policy version; one JSON line per decision
    that differs (and per stored version that was edited)."""
    with _log(dsn) as (conn, log):
        result = replay(log.records(), lambda address: load_version(conn, address))
    for difference in result.differences:
        print(json.dumps(difference.to_json(), sort_keys=True), file=out)
    for address in result.edited_versions:
        print(json.dumps({"policyContent": address, "problem": "edited: no longer hashes to its address"}), file=out)
    print(
        f"replayed {result.decisions} decisions: {len(result.differences)} differ; "
        f"{len(result.edited_versions)} stored policy versions edited",
        file=summary,
    )
    return 1 if result.differences or result.edited_versions else 0


def export(dsn: str, tenant: str, since: datetime.datetime, until: datetime.datetime | None, out: TextIO) -> int:
    """The tenant's records written in [since, until), one JSON line each, credentials taken out."""
    with _log(dsn) as (_, log):
        rows = log.timed_records(since, until)
    for record, at in rows:
        if belongs_to(record, tenant):
            out.write(export_line(record, at) + "\n")
    return 0


def timestamp(text: str) -> datetime.datetime:
    """An ISO 8601 time; without a zone it is UTC."""
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo is not None else value.replace(tzinfo=datetime.UTC)


def reported(command: str, dsn: str | None, call: Callable[[str], int]) -> int:
    """`call(dsn)`, with an unreadable log as a message and status 2, never a traceback."""
    if not dsn:
        print(f"paybill audit {command}: no database (--dsn, or PAYBILL_DATABASE_URL)", file=sys.stderr)
        return 2
    try:
        return call(dsn)
    except Unreadable as exc:
        print(f"paybill audit {command}: {exc}", file=sys.stderr)
        return 2
