"""The audit chain survives a database outage and sees its own tail being lost (issue 13, item 2).

Against a real PostgreSQL of this module's own (stopped and started here; the session's server is shared), and
the real checkpoint stores: a file, and a ConfigMap on the emulated API server. Each test has its own database.
"""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes
import psycopg
import pytest
from kopf.testing import KopfRunner
from psycopg import conninfo, sql

from paybill.audit import AuditLog, AuditUnavailable, ChainBroken, RecordsMissing
from paybill.audit.chain import (
    GENESIS,
    SEALED_FORMAT,
    TIMED_FORMAT,
    AuditRecord,
    PrefixChanged,
    Seal,
    SealNeeded,
    chain_after,
    check_chain,
    prefix_digest,
    record_hash,
    unchecked,
)
from paybill.audit.checkpoint import CheckpointStore, ConfigMapCheckpoint, FileCheckpoint, Head
from paybill.audit.log import storable
from paybill.database import TenantDatabases
from paybill.database.server import LocalPostgres
from paybill.handlers.settings import checkpoint_store
from paybill.kubeclient import Kube

API = "paybill.dev/v1alpha1"
_databases = itertools.count()


@pytest.fixture(scope="module")
def server() -> Iterator[LocalPostgres]:
    """A durable server of this module's own, so that stopping it disturbs no other test."""
    directory = Path(tempfile.mkdtemp(prefix="paybill-audit-pg-"))
    local = LocalPostgres(directory / "postgres")
    local.start()
    yield local
    local.remove()
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def dsn(server: LocalPostgres) -> str:
    """A fresh database on the module's server (the operator's database, as far as the log knows)."""
    name = f"audit_{next(_databases)}"
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return conninfo.make_conninfo(server.dsn, dbname=name)


@pytest.fixture
def databases(dsn: str, tmp_path: Path) -> Iterator[TenantDatabases]:
    """What the operator hands the log (handlers/settings.py): per-thread connections as its admin role."""
    dbs = TenantDatabases(dsn, tmp_path / "backups")
    yield dbs
    dbs.close()


def stored(dsn: str) -> list[AuditRecord]:
    """The records as a fresh session sees them (not the log's own, possibly broken, connection)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return AuditLog(lambda: conn).records()


def within(seconds: float, check: Callable[[], Any]) -> Any:
    """Wait for `check` to return something true, with a deadline."""
    deadline = time.monotonic() + seconds
    while not (result := check()):
        assert time.monotonic() < deadline, f"not within {seconds}s: {check}"
        time.sleep(0.05)
    return result


# --- (1) an outage: records are kept and written in order once the database is back ---------------------------


def test_records_appended_while_the_database_is_down_are_written_in_order_once_it_is_back(
    server: LocalPostgres, dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    store = FileCheckpoint(tmp_path / "audit")
    log = AuditLog(databases.connect, store, retry_interval=0.2)
    first = log.append("Tenant", "acme", "provision", {"n": 0})
    assert first is not None and first.seq == 1
    port = server.port
    server.stop()
    try:
        for n in range(1, 6):  # no exception: the handler goes on, the record waits in memory
            assert log.append("Tenant", "acme", "step", {"n": n}) is None
        assert log.pending == 5
        assert store.load(log.chain) == Head(log.chain, 1, first.hash)  # nothing new committed: nothing checkpointed
    finally:
        server.start()
    assert server.port == port, "the server came back on another port"
    # No further append: the background flush writes them, in order, still chained.
    within(30, lambda: len(stored(dsn)) == 6)
    assert [r.details["n"] for r in stored(dsn)] == [0, 1, 2, 3, 4, 5]
    assert log.pending == 0
    assert log.verify() == 6
    last = stored(dsn)[-1]
    assert store.load(log.chain) == Head(log.chain, 6, last.hash)


def test_past_its_bound_the_buffer_refuses_loudly_and_the_chain_records_how_many_were_dropped(
    server: LocalPostgres, dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"), buffer_limit=3, retry_interval=3600)
    log.append("Tenant", "acme", "provision", {"n": 0})
    server.stop()
    try:
        for n in (1, 2, 3):
            assert log.append("Tenant", "acme", "step", {"n": n}) is None
        for n in (4, 5):
            with pytest.raises(AuditUnavailable, match="3 records are waiting"):
                log.append("Tenant", "acme", "step", {"n": n})
        assert log.pending == 3 and log.dropped == 2
    finally:
        server.start()
    # The next append writes what waited first (the background retry is an hour away), then the loss, then itself.
    written = log.append("Tenant", "acme", "after", {"n": 6})
    assert written is not None and written.seq == 6
    records = stored(dsn)
    assert [(r.event, r.details.get("n")) for r in records] == [
        ("provision", 0),
        ("step", 1),
        ("step", 2),
        ("step", 3),
        ("RecordsDropped", None),
        ("after", 6),
    ]
    assert records[4].kind == "AuditLog" and records[4].details["count"] == 2
    assert log.verify() == 6 and log.dropped == 0


def test_numbers_jsonb_spells_otherwise_verify_as_written(dsn: str, databases: TenantDatabases, tmp_path: Path) -> None:
    """Fifth outside review (HIGH): a workflow parameter of 1e19 went into a record as the float Python hashed
    (1e+19), came back from jsonb as the integer 10000000000000000000, and broke the chain for good."""
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"))
    tricky = [1e19, -0.0, 1e16, 9999999999999998.0, 1.5e-7, 0.1, 10**30, 1e300, -2.5e17, 123.0]
    for value in tricky:
        log.append("AgentWorkflow", "ns/wf", "StepRan", {"params": [value], "nested": {"v": value}})
    assert log.verify() == len(tricky)


@pytest.mark.parametrize(
    "details", [{"why": "nul \x00 here"}, {"nul\x00key": 1}, {"n": float("nan")}, {"s": ["\ud800"]}]
)
def test_a_record_no_database_could_store_is_refused_before_it_waits(
    server: LocalPostgres, dsn: str, databases: TenantDatabases, tmp_path: Path, details: dict[str, Any]
) -> None:
    """Refused to the caller at once, so that it never sits in the buffer blocking the records after it."""
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"), retry_interval=0.2)
    server.stop()
    try:
        with pytest.raises(ValueError):
            log.append("Tenant", "acme", "step", details)
        assert log.append("Tenant", "acme", "step", {"n": 1}) is None
        assert log.pending == 1
    finally:
        server.start()
    within(30, lambda: [r.details for r in stored(dsn)] == [{"n": 1}])


@pytest.mark.slow
def test_the_operators_transitions_during_an_outage_reach_the_chain_in_order(
    server: LocalPostgres, cluster: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real operator: a tenant created while PostgreSQL is stopped goes Provisioning -> Failed; those
    records wait (no AuditUnavailable Event) and precede its later ones in the chain, which holds against the
    operator's own checkpoint."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", server.dsn)
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    name, port = "outage", server.port
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=120) as runner:
        server.stop()
        try:
            onboard(cluster, name)
            cluster.eventually(lambda: status(cluster, name).get("phase") == "Failed", timeout=40)
        finally:
            server.start()
        assert server.port == port, "the server came back on another port"
        cluster.eventually(lambda: status(cluster, name).get("phase") == "Active", timeout=90)
        transitions = cluster.eventually(lambda: tenant_records(server.dsn, name), timeout=30)
    assert runner.exit_code == 0, runner.output
    assert transitions[:2] == [("provision", "Provisioning"), ("fail", "Failed")], transitions
    assert transitions[-1][1] == "Active"
    reasons = {e.get("reason") for e in cluster.kube.list("v1", "events") if e["involvedObject"].get("name") == name}
    assert "AuditUnavailable" not in reasons
    with psycopg.connect(server.dsn, autocommit=True) as conn:
        checkpoint = FileCheckpoint(tmp_path / "state" / "audit")
        log = AuditLog(lambda: conn, checkpoint)
        assert log.verify() == len(log.records())
        last = log.records()[-1]
        assert checkpoint.load(log.chain) == Head(log.chain, last.seq, last.hash)


def tenant_records(dsn: str, name: str) -> list[tuple[str, str]] | None:
    """The tenant's (event, phase entered) records once it has reached Active in the chain."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        records = [(r.event, r.details["to"]) for r in AuditLog(lambda: conn).records("Tenant", name)]
    return records if records and records[-1][1] == "Active" else None


def onboard(cluster: Any, name: str) -> None:
    cluster.kube.apply(
        {
            "apiVersion": API,
            "kind": "Plan",
            "metadata": {"name": "plan-pooled"},
            "spec": {
                "tier": "pooled",
                "isolation": "pooled",
                "quotas": {"cpu": "1", "memory": "1Gi", "storage": "1Gi"},
            },
        }
    )
    for kind, spec in (
        ("Subscription", {"tenantRef": name, "planRef": "plan-pooled"}),
        ("Tenant", {"planRef": "plan-pooled"}),
    ):
        cluster.kube.apply({"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec})


def status(cluster: Any, name: str) -> dict[str, Any]:
    return (cluster.kube.get(API, "tenants", name) or {}).get("status") or {}


# --- (2) a crash that loses the tail: verify says so, with the count ------------------------------------------


def test_a_lost_tail_is_reported_as_truncated_with_the_count(
    dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    store = FileCheckpoint(tmp_path / "audit")
    log = AuditLog(databases.connect, store)
    written = [log.append("Tenant", "acme", "step", {"n": n}) for n in range(10)]
    assert log.verify() == 10
    with psycopg.connect(dsn, autocommit=True) as superuser:  # what an immediate stop did to unflushed commits
        superuser.execute("DELETE FROM paybill.audit_log WHERE seq > 7")
    with pytest.raises(RecordsMissing, match=r"^truncated: 3 records missing after seq 7$") as caught:
        log.verify()
    assert (caught.value.after, caught.value.missing) == (7, 3)
    # Without its checkpoint the chain looks whole: this is what the checkpoint adds. (Without the store at all, the
    # sealed chain cannot be checked: its seal is kept there too.)
    assert check_chain(log.records(), None, store.load_seal()) == 7
    with pytest.raises(SealNeeded):
        AuditLog(databases.connect).verify()

    # An operator restarted after the crash goes on appending, and the loss stays visible.
    restarted = AuditLog(databases.connect, store)
    again = restarted.append("Tenant", "acme", "step", {"n": 10})
    assert again is not None and again.seq == 11
    assert again.previous == (written[-1] or again).hash  # chained to the checkpoint: the gap stays in the chain itself
    with pytest.raises(RecordsMissing, match=r"^truncated: 3 records missing after seq 7$"):
        restarted.verify()


def test_a_database_restored_from_an_earlier_copy_is_reported_as_truncated(
    server: LocalPostgres, dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"))
    for n in range(4):
        log.append("Tenant", "acme", "step", {"n": n})
    name = conninfo.conninfo_to_dict(dsn)["dbname"]
    databases.close()
    with psycopg.connect(server.dsn, autocommit=True) as superuser:
        superuser.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(f"{name}_copy"), sql.Identifier(name))
        )
    for n in range(4, 9):
        log.append("Tenant", "acme", "step", {"n": n})
    databases.close()
    with psycopg.connect(server.dsn, autocommit=True) as superuser:
        superuser.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))
        superuser.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(sql.Identifier(f"{name}_copy"), sql.Identifier(name))
        )
    with pytest.raises(RecordsMissing, match=r"^truncated: 5 records missing after seq 4$"):
        log.verify()


def test_a_log_that_lost_every_record_is_truncated_after_seq_0(
    dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"))
    for n in range(3):
        log.append("Tenant", "acme", "step", {"n": n})
    with psycopg.connect(dsn, autocommit=True) as superuser:
        superuser.execute("DELETE FROM paybill.audit_log")
    with pytest.raises(RecordsMissing, match=r"^truncated: 3 records missing after seq 0$"):
        log.verify()


def test_a_log_dropped_under_a_running_operator_is_truncated_not_started_again(
    dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"), retry_interval=0.1)
    for n in range(3):
        log.append("Tenant", "acme", "step", {"n": n})
    with psycopg.connect(dsn, autocommit=True) as superuser:
        superuser.execute("DROP SCHEMA paybill CASCADE")
    assert log.append("Tenant", "acme", "step", {"n": 3}) is None  # waits; set up again by the retry
    within(30, lambda: log.pending == 0)
    assert [r.seq for r in stored(dsn)] == [4]
    with pytest.raises(RecordsMissing, match=r"^truncated: 3 records missing after seq 0$"):
        log.verify()


def test_a_log_rewritten_at_the_checkpoint_is_a_broken_chain(
    dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    """Same length as the checkpoint, other content: the tail was replaced, not only lost."""
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"))
    for n in range(3):
        log.append("Tenant", "acme", "step", {"n": n})
    with psycopg.connect(dsn, autocommit=True) as superuser:
        superuser.execute("DELETE FROM paybill.audit_log WHERE seq = 3")
    AuditLog(databases.connect).append("Tenant", "acme", "forged", {})  # a writer that knows no checkpoint (nor seal)
    with pytest.raises(ChainBroken, match="audit record 3: not sealed, though the chain is sealed from record 1 on"):
        log.verify()
    with psycopg.connect(dsn, autocommit=True) as superuser:  # one that seals under a key of its own
        superuser.execute("DELETE FROM paybill.audit_log WHERE seq = 3")
    AuditLog(databases.connect, FileCheckpoint(tmp_path / "elsewhere")).append("Tenant", "acme", "forged", {})
    with pytest.raises(ChainBroken, match="audit record 3: content does not match its hash"):
        log.verify()


# --- (3) the checkpoint never lags a committed record ---------------------------------------------------------


@pytest.fixture(params=["file", "configmap"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> CheckpointStore:
    if request.param == "file":
        return FileCheckpoint(tmp_path / "audit")
    cluster = request.getfixturevalue("cluster")
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "paybill-system"}})
    return ConfigMapCheckpoint(cluster.kube, "paybill-system")


def test_the_checkpoint_never_lags_a_committed_record(
    dsn: str, databases: TenantDatabases, store: CheckpointStore
) -> None:
    log = AuditLog(databases.connect, store)
    lagged: list[tuple[int, int]] = []

    def appender(worker: int) -> None:
        for n in range(10):
            record = log.append("Tenant", f"t{worker}", "step", {"n": n})
            assert record is not None
            head = store.load(log.chain)
            if head is None or head.seq < record.seq:
                lagged.append((record.seq, head.seq if head else 0))

    threads = [threading.Thread(target=appender, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert lagged == []
    records = stored(databases.dsn())
    assert len(records) == 40
    assert store.load(log.chain) == Head(log.chain, 40, records[-1].hash)
    assert log.verify() == 40


def test_a_checkpoint_is_taken_from_the_database_when_none_was_kept(
    dsn: str, databases: TenantDatabases, tmp_path: Path
) -> None:
    """An existing log (before checkpoints, or a lost state directory): its head is adopted at the first append."""
    plain = AuditLog(databases.connect)
    for n in range(3):
        plain.append("Tenant", "acme", "step", {"n": n})
    store = FileCheckpoint(tmp_path / "audit")
    log = AuditLog(databases.connect, store)
    assert log.append("Tenant", "acme", "step", {"n": 3}) is not None
    assert store.load(log.chain) == Head(log.chain, 4, stored(dsn)[-1].hash)


def test_a_checkpoint_of_another_chain_is_not_this_ones(tmp_path: Path) -> None:
    store = FileCheckpoint(tmp_path / "audit")
    store.save(Head("one", 5, "a" * 64))
    store.save(Head("one", 3, "b" * 64))  # never lowered
    store.save(Head("two", 1, "c" * 64))
    assert store.load("one") == Head("one", 5, "a" * 64)
    assert store.load("two") == Head("two", 1, "c" * 64)
    assert store.load("three") is None
    assert (tmp_path / "audit").stat().st_mode & 0o777 == 0o700


# --- the pure check, table-driven -------------------------------------------------------------------------------


def chain_of(count: int) -> list[AuditRecord]:
    records, previous = [], GENESIS
    for seq in range(1, count + 1):
        digest = record_hash(previous, "Tenant", "acme", "step", {"seq": seq})
        records.append(AuditRecord(seq, "Tenant", "acme", "step", {"seq": seq}, previous, digest))
        previous = digest
    return records


FIVE = chain_of(5)


@pytest.mark.parametrize(
    ("records", "head", "outcome"),
    [
        (FIVE, None, 5),
        ([], None, 0),
        (FIVE, Head("c", 5, FIVE[4].hash), 5),
        (FIVE, Head("c", 3, FIVE[2].hash), 5),  # the checkpoint lagged (a crash between commit and checkpoint)
        (FIVE[:3], Head("c", 5, FIVE[4].hash), "truncated: 2 records missing after seq 3"),
        ([], Head("c", 5, FIVE[4].hash), "truncated: 5 records missing after seq 0"),
        (FIVE[:2] + FIVE[4:], None, "truncated: 2 records missing after seq 2"),
        (FIVE, Head("c", 4, "f" * 64), "audit record 4: differs from the checkpoint"),
        ([*FIVE[:2], FIVE[3]], None, "truncated: 1 record missing after seq 2"),
    ],
)
def test_check_chain(records: list[AuditRecord], head: Head | None, outcome: int | str) -> None:
    if isinstance(outcome, int):
        assert check_chain(records, head) == outcome
    else:
        with pytest.raises(ChainBroken) as caught:
            check_chain(records, head)
        assert str(caught.value) == outcome


KEY, OTHER_KEY = b"k" * 32, b"o" * 32
UNSEALED = "not sealed, though the chain is sealed from record 1 on"


def sealed_chain(*keys: bytes | None) -> list[AuditRecord]:
    """One record per key: sealed under it, or in plain hashes (format 2) for None."""
    records, previous = [], GENESIS
    for seq, key in enumerate(keys, start=1):
        hash_format = TIMED_FORMAT if key is None else SEALED_FORMAT
        at = f"2026-12-01T00:00:0{seq}.000000Z"
        digest = record_hash(previous, "Tenant", "acme", "step", {"seq": seq}, hash_format, at, key)
        records.append(AuditRecord(seq, "Tenant", "acme", "step", {"seq": seq}, previous, digest, at, hash_format))
        previous = digest
    return records


@pytest.mark.parametrize(
    ("records", "since", "foreign", "outcome", "not_checked"),
    [
        (sealed_chain(KEY, KEY, KEY), 1, (), 3, []),
        (sealed_chain(None, None, KEY, KEY), 3, (), 4, []),  # sealed from an upgrade on: the plain ones as before
        (sealed_chain(None, OTHER_KEY, KEY), 3, ((2, 2),), 3, [2]),  # another store's seal the seal lists: place only
        (  # fourth outside review: a plain record relabelled as sealed to escape its check
            sealed_chain(None, OTHER_KEY, KEY),
            3,
            (),
            "audit record 2: marked sealed, but written before the chain's seal began (record 3)",
            [],
        ),
        (sealed_chain(KEY, None, KEY), 1, (), f"audit record 2: {UNSEALED}", []),
        (sealed_chain(KEY, OTHER_KEY, KEY), 1, (), "audit record 2: content does not match its hash", []),
        (sealed_chain(None, None), 1, (), f"audit record 1: {UNSEALED}", []),
    ],
)
def test_check_chain_with_its_seal(
    records: list[AuditRecord],
    since: int,
    foreign: tuple[tuple[int, int], ...],
    outcome: int | str,
    not_checked: list[int],
) -> None:
    seal = Seal("c", KEY, since, foreign, prefix_digest([r for r in records if r.seq < since]))
    if isinstance(outcome, int):
        assert check_chain(records, None, seal) == outcome
    else:
        with pytest.raises(ChainBroken) as caught:
            check_chain(records, None, seal)
        assert str(caught.value) == outcome
    assert unchecked(records, seal) == not_checked
    if any(r.hash_format == SEALED_FORMAT for r in records):
        with pytest.raises(SealNeeded):
            check_chain(records, None)


def test_details_nested_beyond_what_can_be_hashed_are_a_named_fault_or_refused() -> None:
    """Sixth outside review: details that json could read back but not encode again crashed verify."""
    deep: Any = []
    for _ in range(5000):
        deep = [deep]
    records = chain_of(2)
    records[1] = dataclasses.replace(records[1], details={"deep": deep})
    with pytest.raises(ChainBroken, match=r"^audit record 2: its details nest too deeply to be checked$"):
        check_chain(records, None)
    with pytest.raises(ValueError, match="nest this deeply"):
        storable("Tenant", "acme", "step", {"deep": deep})


def test_the_seal_freezes_what_was_before_it() -> None:
    """Fifth outside review: below a record sealed under a lost key (listed in the seal, its content and place
    vouched for by no hash), the plain records before it could be edited and hashed again."""
    records = sealed_chain(None, None, OTHER_KEY, KEY)
    seal = Seal("c", KEY, 4, ((3, 3),), prefix_digest(records[:3]))
    assert check_chain(records, None, seal) == 4
    forged, previous = [], GENESIS
    for record in records[:3]:
        details = {"seq": record.seq, "amount": 1000000} if record.seq == 1 else record.details
        digest = (
            record.hash
            if record.hash_format == SEALED_FORMAT
            else record_hash(previous, record.kind, record.name, record.event, details, record.hash_format, record.at)
        )
        forged.append(dataclasses.replace(record, details=details, previous=previous, hash=digest))
        previous = digest
    forged[2] = dataclasses.replace(forged[2], hash=records[2].hash)  # the lost-key record keeps its hash: no check
    with pytest.raises(PrefixChanged, match=r"^audit record 1: records 1 to 3 are not as they were"):
        check_chain([*forged, records[3]], None, seal)


@pytest.mark.parametrize(
    ("last", "checkpoint", "after"),
    [
        (None, None, (1, GENESIS)),
        (Head("c", 5, "e" * 64), None, (6, "e" * 64)),
        (Head("c", 5, "e" * 64), Head("c", 3, "d" * 64), (6, "e" * 64)),  # the checkpoint lagged: the database leads
        (Head("c", 5, "e" * 64), Head("c", 5, "e" * 64), (6, "e" * 64)),
        (Head("c", 3, "d" * 64), Head("c", 5, "e" * 64), (6, "e" * 64)),  # the database lost 4 and 5: the gap stays
        (None, Head("c", 5, "e" * 64), (6, "e" * 64)),
    ],
)
def test_chain_after(last: Head | None, checkpoint: Head | None, after: tuple[int, str]) -> None:
    assert chain_after(last, checkpoint) == after


def test_the_operator_keeps_its_checkpoint_in_its_namespace_else_in_its_state_directory(tmp_path: Path) -> None:
    kube = Kube(kubernetes.client.ApiClient())
    in_cluster = checkpoint_store({"PAYBILL_STATE_DIR": str(tmp_path)}, kube, "paybill-system")
    assert isinstance(in_cluster, ConfigMapCheckpoint) and in_cluster.namespace == "paybill-system"
    local = checkpoint_store({"PAYBILL_STATE_DIR": str(tmp_path)}, kube, None)
    assert isinstance(local, FileCheckpoint) and local.directory == tmp_path / "audit"
    home = checkpoint_store({"HOME": str(tmp_path / "home")}, kube, None)
    assert isinstance(home, FileCheckpoint) and home.directory == tmp_path / "home/.local/state/paybill/audit"


@pytest.mark.parametrize(
    "edited",
    [
        "12.50000000000000000001",
        "12.499999999999999999999",
        "0.10000000000000000001",
        "1e-400",
        "-0.0000000000000000001",
    ],
)
def test_a_number_edited_below_float_precision_breaks_the_chain(
    dsn: str, databases: TenantDatabases, tmp_path: Path, edited: str
) -> None:
    """Eighth outside review (LOW): jsonb keeps a number exactly, a float does not; an edit that changed only
    digits a float cannot hold read back as the number Paybill wrote, and verified. A fraction is read as the
    float it was written from only when jsonb holds exactly that float's value."""
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"))
    log.append("AgentWorkflow", "ns/wf", "StepRan", {"params": [12.5, 0.1, 1.5e-7], "total": 0.0})
    assert log.verify() == 1
    seq = log.records()[-1].seq
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE paybill.audit_log SET details = jsonb_set(details, '{{total}}', '{edited}'::jsonb) WHERE seq = %s",
            [seq],
        )
    with pytest.raises(ChainBroken) as broken:
        log.verify()
    assert broken.value.seq == seq


@pytest.mark.parametrize(
    ("written", "edited"),
    [
        ({"amount": "0.10000000000000000001"}, '{"amount": 0.10000000000000000001}'),  # text made a number
        ({"big": "1" + "0" * 400 + ".5"}, '{"big": 1' + "0" * 400 + ".5}"),
        ({"nested": [["12.50000000000000000001"]]}, '{"nested": [[12.50000000000000000001]]}'),
        ({"amount": 1.5}, '{"amount": 1.50}'),  # the same value, written otherwise
    ],
)
def test_a_number_paybill_never_writes_breaks_the_chain(
    dsn: str, databases: TenantDatabases, tmp_path: Path, written: dict[str, Any], edited: str
) -> None:
    """Ninth outside review (LOW): a number no float is was read back as its text, which hashes as the string of the
    same characters: a string detail turned into that number verified. A number Paybill never writes (not a float's
    value, or not as json.dumps spells it) is a record that cannot be read."""
    log = AuditLog(databases.connect, FileCheckpoint(tmp_path / "audit"))
    log.append("AgentWorkflow", "ns/wf", "StepRan", written)
    assert log.verify() == 1
    seq = log.records()[-1].seq
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE paybill.audit_log SET details = %s::jsonb WHERE seq = %s", [edited, seq])
    with pytest.raises(ChainBroken) as broken:
        log.verify()
    assert broken.value.seq == seq
