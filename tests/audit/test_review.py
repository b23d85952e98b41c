"""`paybill audit verify | replay | export` against a real PostgreSQL (issue 16 item 6): each test has a database of
its own, holding an audit log written by AuditLog, tampered with by plain SQL as someone with access to the
database would."""

from __future__ import annotations

import datetime
import hashlib
import json
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from paybill import cli
from paybill.api.agentpolicy import AgentPolicySpec
from paybill.audit import AuditLog, ConfigMapCheckpoint, FileCheckpoint
from paybill.audit.chain import GENESIS, Head, record_hash
from paybill.audit.versions import PolicyVersions, address_of
from paybill.database.server import LocalPostgres
from paybill.policy.engine import PolicyEngine
from paybill.policy.schema import Schema
from paybill.workflows.run import StepOutcome

SCHEMA = Schema.from_ddl(
    "CREATE TABLE orders (tenant_id text NOT NULL, id int NOT NULL, status text, total numeric, "
    "PRIMARY KEY (tenant_id, id))",
    "app",
)
POLICY = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "bot", "agent": "agent:bot"}],
        "rules": [
            {"id": "read-orders", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
            {
                "id": "fix-status",
                "effect": "allow",
                "actions": ["update"],
                "tables": ["orders"],
                "columns": ["status"],
                "requireWhere": True,
            },
        ],
    }
)


@pytest.fixture
def dsn(postgres: LocalPostgres) -> Iterator[str]:
    """A database of the test's own (the audit log's tables are made in it by the first append)."""
    name = f"audit_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield conninfo.make_conninfo(postgres.dsn, dbname=name)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[[], psycopg.Connection]]:
    conn = psycopg.connect(dsn, autocommit=True)
    yield lambda: conn
    conn.close()


def paybill(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def lifecycle(log: AuditLog, tenant: str) -> None:
    for event, (source, target) in {
        "Provision": ("Pending", "Provisioning"),
        "Provisioned": ("Provisioning", "Active"),
        "Suspend": ("Active", "Suspended"),
        "Resume": ("Suspended", "Active"),
    }.items():
        log.append("Tenant", tenant, event, {"from": source, "to": target, "why": "test"})


@pytest.mark.parametrize(
    ("tampering", "found"),
    [
        (
            'UPDATE paybill.audit_log SET details = details || \'{"to": "Offboarded"}\' WHERE seq = 3',
            "record 3 (Tenant acme Suspend): edited: content does not match its hash",
        ),
        (
            "UPDATE paybill.audit_log SET at = at - interval '3 days' WHERE seq = 3",
            "record 3 (Tenant acme Suspend): edited: content does not match its hash",
        ),
        (
            "DELETE FROM paybill.audit_log WHERE seq = 3",
            "record 3: deleted: record 3 missing, the chain resumes at record 4 (Tenant acme Resume)",
        ),
        (
            "UPDATE paybill.audit_log SET seq = -seq WHERE seq IN (2, 3); "
            "UPDATE paybill.audit_log SET seq = CASE seq WHEN -2 THEN 3 ELSE 2 END WHERE seq < 0",
            "record 2 (Tenant acme Suspend): does not follow the previous record (a record before it was removed, "
            "or records were reordered)",
        ),
    ],
    ids=["edited", "time-edited", "deleted", "reordered"],
)
def test_verify_names_the_first_tampered_record(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tampering: str, found: str
) -> None:
    log = AuditLog(connect)
    lifecycle(log, "acme")
    assert paybill(capsys, "audit", "verify", "--dsn", dsn) == (0, "audit chain intact: 4 records\n", "")
    for statement in tampering.split("; "):
        connect().execute(statement)
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn)
    assert status == 1 and out == f"audit chain broken at {found}\n"


# The log as operators before hash format 2 made it: no hash_format column, `at` outside the hash.
OLD_LOG = (
    "CREATE SCHEMA paybill",
    "CREATE TABLE paybill.audit_log (seq bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now(), "
    "kind text NOT NULL, name text NOT NULL, event text NOT NULL, details jsonb NOT NULL, previous text NOT NULL, "
    "hash text NOT NULL)",
    "CREATE TABLE paybill.audit_chain (one boolean PRIMARY KEY DEFAULT true CHECK (one), "
    "id text NOT NULL DEFAULT gen_random_uuid()::text)",
    "INSERT INTO paybill.audit_chain DEFAULT VALUES",
)


def old_format_records(conn: psycopg.Connection, tenant: str) -> None:
    """Four records written as the old operator wrote them (its hash, spelled out here: never the code under test)."""
    previous = "0" * 64
    for seq, event in enumerate(("Provision", "Provisioned", "Suspend", "Resume"), start=1):
        details = {"why": "before the upgrade"}
        content = json.dumps(
            {"kind": "Tenant", "name": tenant, "event": event, "details": details},
            sort_keys=True,
            separators=(",", ":"),
        )
        digest = hashlib.sha256(f"{previous}\n{content}".encode()).hexdigest()
        conn.execute(
            "INSERT INTO paybill.audit_log (seq, kind, name, event, details, previous, hash) "
            "VALUES (%s, 'Tenant', %s, %s, %s, %s, %s)",
            (seq, tenant, event, json.dumps(details), previous, digest),
        )
        previous = digest


def test_records_of_the_old_hash_format_verify_as_before_and_are_reported_as_such(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str]
) -> None:
    for statement in OLD_LOG:
        connect().execute(statement)
    old_format_records(connect(), "acme")
    old = "4 written under hash format 1, which does not cover their times (records 1 to 4)"
    assert paybill(capsys, "audit", "verify", "--dsn", dsn) == (0, f"audit chain intact: 4 records; {old}\n", "")
    with psycopg.connect(dsn) as conn:  # verify only reads: the old table is as it was
        columns = "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'paybill' AND column_name = %s"
        assert conn.execute(columns, ("hash_format",)).fetchone() == (0,)

    lifecycle(AuditLog(connect), "acme")  # the upgraded operator appends: hash format 2, its time covered
    assert paybill(capsys, "audit", "verify", "--dsn", dsn) == (0, f"audit chain intact: 8 records; {old}\n", "")
    status, text, _ = paybill(capsys, "audit", "export", "--dsn", dsn, "--tenant", "acme", "--since", "2000-01-01")
    assert status == 0 and [json.loads(line)["hashFormat"] for line in text.splitlines()] == [1] * 4 + [2] * 4
    connect().execute("UPDATE paybill.audit_log SET at = at - interval '1 year' WHERE seq = 2")
    assert paybill(capsys, "audit", "verify", "--dsn", dsn)[0] == 0  # an old record's time was never covered

    for tampering, undo, found in (
        (  # the time of a new record
            "at = at + interval '1 hour' WHERE seq = 6",
            "at = at - interval '1 hour' WHERE seq = 6",
            "record 6 (Tenant acme Provisioned): edited: content does not match its hash",
        ),
        (  # a new record passed off as an old one, so that its time would not count
            "hash_format = 1, at = at + interval '1 hour' WHERE seq = 6",
            "hash_format = 2, at = at - interval '1 hour' WHERE seq = 6",
            "record 6 (Tenant acme Provisioned): edited: content does not match its hash",
        ),
        (  # an old record passed off as a new one
            "hash_format = 2 WHERE seq = 3",
            "hash_format = 1 WHERE seq = 3",
            "record 3 (Tenant acme Suspend): edited: content does not match its hash",
        ),
        (  # a format this Paybill does not know is never taken on trust
            "hash_format = 4 WHERE seq = 7",
            "hash_format = 2 WHERE seq = 7",
            "record 7 (Tenant acme Suspend): hash format 4 is unknown to this Paybill: the record cannot be verified",
        ),
    ):
        connect().execute("UPDATE paybill.audit_log SET " + tampering)
        status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn)
        assert (status, out) == (1, f"audit chain broken at {found}\n"), tampering
        connect().execute("UPDATE paybill.audit_log SET " + undo)
    assert paybill(capsys, "audit", "verify", "--dsn", dsn)[0] == 0


def test_verify_finds_a_deleted_tail_through_the_checkpoint(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    checkpoints = tmp_path / "state" / "audit"
    lifecycle(AuditLog(connect, FileCheckpoint(checkpoints)), "acme")
    args = ("audit", "verify", "--dsn", dsn, "--checkpoint", str(checkpoints))
    intact = "audit chain intact: 4 records, up to its checkpoint at record 4, sealed from record 1\n"
    assert paybill(capsys, *args)[:2] == (0, intact)
    connect().execute("DELETE FROM paybill.audit_log WHERE seq = 4")
    assert paybill(capsys, *args)[:2] == (1, "audit chain broken at record 4: deleted: record 4 missing\n")


def rehash(conn: psycopg.Connection, start: int, hash_format: int, key: bytes | None = None) -> None:
    """What someone who can write the database does after editing record `start`: every hash from there on made
    again, under `hash_format` (format 3 with `key`, a guess at the seal's)."""
    records = AuditLog(lambda: conn).records()
    previous = records[start - 2].hash if start > 1 else GENESIS
    for record in records[start - 1 :]:
        digest = record_hash(
            previous, record.kind, record.name, record.event, record.details, hash_format, record.at, key
        )
        conn.execute(
            "UPDATE paybill.audit_log SET previous = %s, hash = %s, hash_format = %s WHERE seq = %s",
            (previous, digest, hash_format, record.seq),
        )
        previous = digest


def test_a_sealed_chain_cannot_be_edited_and_hashed_again_without_its_key(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Third outside review: with plain hashes, someone who can write the database edited a record and computed every
    later hash again; the chain alone then verified intact, and the checkpoint said only that the chain differed."""
    checkpoints = tmp_path / "state" / "audit"
    lifecycle(AuditLog(connect, FileCheckpoint(checkpoints)), "acme")
    args = ("audit", "verify", "--dsn", dsn, "--checkpoint", str(checkpoints))
    connect().execute("""UPDATE paybill.audit_log SET details = details || '{"why": "forged"}' WHERE seq = 2""")
    for hash_format, key, found in (
        (2, None, "record 2 (Tenant acme Provisioned): not sealed, though the chain is sealed from record 1 on"),
        (3, secrets.token_bytes(32), "record 2 (Tenant acme Provisioned): edited: content does not match its hash"),
    ):
        rehash(connect(), 2, hash_format, key)
        assert paybill(capsys, *args)[:2] == (1, f"audit chain broken at {found}\n")
    rehash(connect(), 1, 2)  # the whole chain in plain hashes, as if it had never been sealed
    found = "record 1 (Tenant acme Provision): not sealed, though the chain is sealed from record 1 on"
    assert paybill(capsys, *args)[:2] == (1, f"audit chain broken at {found}\n")
    status, _, err = paybill(capsys, "audit", "verify", "--dsn", dsn)  # the chain alone says nothing of its seal
    assert status == 0
    rehash(connect(), 1, 3, secrets.token_bytes(32))
    status, _, err = paybill(capsys, "audit", "verify", "--dsn", dsn)
    assert status == 2 and "the chain is sealed (record 1 on)" in err and "--checkpoint DIR" in err
    assert oct((checkpoints / "seal.json").stat().st_mode & 0o777) == "0o600"


def test_a_log_whose_chain_id_was_rewritten_is_a_replaced_log_and_is_never_sealed_again(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Fourth outside review (HIGH): the seal and checkpoint were looked up by the chain id the database holds, so
    a DBA who rewrote every record in plain hashes and gave the chain a new id was told "intact"; and the operator
    sealed the forgery under a new key, replacing the Secret."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    lifecycle(AuditLog(connect, store), "acme")
    sealed = store.load_seal()
    assert sealed is not None
    rehash(connect(), 1, 2)
    connect().execute("UPDATE paybill.audit_chain SET id = gen_random_uuid()")
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    assert status == 1 and out.startswith("audit chain broken: the database's audit chain is ")
    assert f"not {sealed.chain}, the chain its checkpoint seals" in out
    writer = AuditLog(connect, store, retry_interval=3600)
    assert writer.append("Tenant", "acme", "Suspend", {}) is None and writer.pending == 1  # waits: never sealed
    assert store.load_seal() == sealed
    writer.close()


def test_a_record_before_the_seal_relabelled_as_sealed_is_a_fault(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Fourth outside review: a record written before the seal began, edited and marked as sealed (format 3) under
    another key, was only checked for its place in the chain."""
    lifecycle(AuditLog(connect), "acme")  # before the seal: plain hashes
    store = FileCheckpoint(tmp_path / "state" / "audit")
    lifecycle(AuditLog(connect, store), "acme")
    args = ("audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    intact = "audit chain intact: 8 records, up to its checkpoint at record 8, sealed from record 5\n"
    assert paybill(capsys, *args)[:2] == (0, intact)
    connect().execute(
        """UPDATE paybill.audit_log SET hash_format = 3, details = details || '{"why": "forged"}' WHERE seq = 2"""
    )
    found = "record 2 (Tenant acme Provisioned): marked sealed, but written before the chain's seal began (record 5)"
    assert paybill(capsys, *args)[:2] == (1, f"audit chain broken at {found}\n")


def test_a_record_whose_details_cannot_be_read_back_is_named(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str]
) -> None:
    """Fourth outside review: a record nested deeper than Python's JSON parser follows crashed verify."""
    lifecycle(AuditLog(connect), "acme")
    deep = "(repeat('[', 3000) || repeat(']', 3000))::jsonb"
    connect().execute(f"UPDATE paybill.audit_log SET details = {deep} WHERE seq = 1")
    assert paybill(capsys, "audit", "verify", "--dsn", dsn)[:2] == (
        1,
        "audit chain broken at record 1: its details cannot be read (nested too deeply)\n",
    )
    status, _, err = paybill(capsys, "audit", "replay", "--dsn", dsn)
    assert status == 2 and "record 1: its details cannot be read" in err
    connect().execute("""UPDATE paybill.audit_log SET details = '{"i": 1e5000}' WHERE seq = 1""")  # fifth review
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn)
    assert status == 1 and out.startswith("audit chain broken at record 1: its details cannot be read (")


def test_a_log_whose_chain_id_was_deleted_is_broken_and_takes_no_record(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Fifth outside review: verify failed on an assertion, and the operator's appends piled up without an error."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    lifecycle(AuditLog(connect, store), "acme")
    connect().execute("DELETE FROM paybill.audit_chain")
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    assert (status, out) == (1, "audit chain broken: the log's chain id was deleted (paybill.audit_chain is empty)\n")
    writer = AuditLog(connect, store, retry_interval=3600)
    assert writer.append("Tenant", "acme", "Suspend", {}) is None and writer.pending == 1
    writer.close()


def test_the_first_seal_never_vouches_for_a_chain_that_does_not_verify(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Sixth outside review (HIGH): an operator before seals wrote records and their checkpoint; a DBA rewrote one
    and hashed the rest again; the upgraded operator chained its first sealed record onto the forgery and froze it
    in the seal, and verify said intact."""
    earlier = AuditLog(connect)  # an operator that knew no seal, with its checkpoint kept as before
    lifecycle(earlier, "acme")
    store = FileCheckpoint(tmp_path / "state" / "audit")
    last = earlier.records()[-1]
    store.save(Head(earlier.chain, last.seq, last.hash))
    connect().execute("""UPDATE paybill.audit_log SET details = details || '{"why": "mallory"}' WHERE seq = 3""")
    rehash(connect(), 3, 2)
    upgraded = AuditLog(connect, store, retry_interval=3600)
    assert upgraded.append("Tenant", "acme", "Offboard", {}) is None and upgraded.pending == 1  # waits, unsealed
    assert store.load_seal() is None
    upgraded.close()
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    assert status == 1 and "record 4" in out and "differs from the checkpoint" in out


def test_an_operator_never_chains_onto_a_head_that_is_not_the_one_it_knows(
    dsn: str, connect: Callable[[], psycopg.Connection], tmp_path: Path
) -> None:
    """Sixth outside review: with the last record's hash set to a value of the DBA's choosing, the operator sealed
    its next record with that value as `previous`."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    lifecycle(AuditLog(connect, store), "acme")
    connect().execute("UPDATE paybill.audit_log SET hash = repeat('a', 64) WHERE seq = 4")
    writer = AuditLog(connect, store, retry_interval=3600)  # a restarted operator: the head it knows is the checkpoint
    assert writer.append("Tenant", "acme", "Offboard", {}) is None and writer.pending == 1
    writer.close()
    assert [r.seq for r in AuditLog(connect).records()] == [1, 2, 3, 4]


def test_the_log_resolves_no_name_in_the_databases_own_schemas(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Sixth outside review: a superuser's schema ahead of pg_catalog redefined the clock the operator sealed, and a
    cast from jsonb to text showed verify the content it expected while the table held another."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    conn = connect()
    conn.execute("CREATE SCHEMA evil")
    conn.execute(
        "CREATE FUNCTION evil.clock_timestamp() RETURNS timestamptz LANGUAGE sql "
        "AS $$ SELECT '2001-02-03 04:05:06+00'::timestamptz $$"
    )
    conn.execute("SET search_path = evil, pg_catalog")
    lifecycle(AuditLog(connect, store), "acme")
    assert all(not record.at.startswith("2001") for record in AuditLog(connect).records())
    conn.execute("RESET search_path")
    conn.execute(
        "CREATE FUNCTION evil.jsonb_as_text(j jsonb) RETURNS text LANGUAGE sql "
        "AS $$ SELECT replace(pg_catalog.textin(pg_catalog.jsonb_out(j)), 'mallory', 'test') $$"
    )
    conn.execute("CREATE CAST (jsonb AS text) WITH FUNCTION evil.jsonb_as_text(jsonb)")
    conn.execute("""UPDATE paybill.audit_log SET details = details || '{"why": "mallory"}' WHERE seq = 2""")
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    assert status == 1 and "record 2 (Tenant acme Provisioned): edited" in out


@pytest.mark.parametrize(
    ("alteration", "found"),
    [
        (
            "ALTER COLUMN at TYPE timestamp USING (at AT TIME ZONE 'UTC') - interval '5 hours'",
            "column at is timestamp without time zone, not timestamp with time zone NOT NULL",
        ),
        ("ALTER COLUMN details TYPE json USING details::json", "column details is json, not jsonb NOT NULL"),
        ("ALTER COLUMN seq TYPE text", "column seq is text, not bigint NOT NULL"),
    ],
    ids=["at", "details", "seq"],
)
def test_a_retyped_column_is_a_fault_for_verify_and_takes_no_record(
    dsn: str,
    connect: Callable[[], psycopg.Connection],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    alteration: str,
    found: str,
) -> None:
    """Seventh outside review: `at` retyped to a timestamp and the database's TimeZone shifted kept every hash while
    export filtered on times 5 hours off; retyped details or seq crashed verify."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    lifecycle(AuditLog(connect, store), "acme")
    connect().execute(f"ALTER TABLE paybill.audit_log {alteration}")
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    assert (status, out) == (1, f"audit chain broken: the log's table was altered: {found}\n")
    writer = AuditLog(connect, store, retry_interval=3600)
    assert writer.append("Tenant", "acme", "Offboard", {}) is None and writer.pending == 1
    writer.close()


def test_a_write_that_hangs_in_the_database_gives_up_and_waits(
    connect: Callable[[], psycopg.Connection], tmp_path: Path
) -> None:
    """Seventh outside review: a trigger sleeping in the audit insert held every append (and the log's lock) for ever,
    with nothing logged."""
    log = AuditLog(connect, FileCheckpoint(tmp_path / "state" / "audit"), retry_interval=3600)
    lifecycle(log, "acme")
    conn = connect()
    conn.execute(
        "CREATE FUNCTION paybill.sleepy() RETURNS trigger LANGUAGE plpgsql "
        "AS $$ BEGIN PERFORM pg_sleep(3600); RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER sleepy BEFORE INSERT ON paybill.audit_log FOR EACH ROW EXECUTE FUNCTION paybill.sleepy()"
    )
    started = time.monotonic()
    assert log.append("Tenant", "acme", "Offboard", {}) is None and log.pending == 1
    assert time.monotonic() - started < 60
    conn.execute("DROP TRIGGER sleepy ON paybill.audit_log")
    assert log.flush() == 0 and log.verify() == 5
    log.close()


@pytest.mark.parametrize(
    "tampering",
    [
        "INSERT INTO paybill.audit_log (seq, kind, name, event, details, previous, hash, hash_format) "
        "VALUES (5, 'Tenant', 'acme', 'forged', '{}', repeat('0', 64), repeat('c', 64), 3)",
        "CREATE RULE swallow AS ON INSERT TO paybill.audit_log WHERE NEW.event = 'Offboard' DO INSTEAD NOTHING",
    ],
    ids=["forged-head", "swallowing-rule"],
)
def test_the_operator_seals_nothing_onto_a_head_it_cannot_vouch_for_nor_into_a_table_that_drops_it(
    connect: Callable[[], psycopg.Connection], tmp_path: Path, tampering: str
) -> None:
    """Eighth outside review: a forged record past the head the operator knew got record 6 sealed onto its chosen
    hash; a rule dropping the insert had the append reported written, and nothing logged."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    log = AuditLog(connect, store, retry_interval=3600)
    lifecycle(log, "acme")
    connect().execute(tampering)
    before = [(r.seq, r.hash) for r in AuditLog(connect).records()]
    assert log.append("Tenant", "acme", "Offboard", {}) is None and log.pending == 1
    assert [(r.seq, r.hash) for r in AuditLog(connect).records()] == before
    log.close()


def test_a_tail_another_writer_wrote_and_a_dba_deleted_stays_a_gap(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Ninth outside review: two writers sharing one store; the second's last records deleted, the first went on
    from the table's last record, moved the checkpoint past the gap, and verify said intact."""
    store = FileCheckpoint(tmp_path / "state" / "audit")
    first, second = AuditLog(connect, store), AuditLog(connect, store)
    lifecycle(first, "acme")
    for event in ("Suspend", "Resume", "Offboard"):
        second.append("Tenant", "globex", event, {})
    connect().execute("DELETE FROM paybill.audit_log WHERE seq = 7")
    for event in ("Provision", "Provisioned"):
        first.append("Tenant", "initech", event, {})
    status, out, _ = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint", str(store.directory))
    assert status == 1 and "record 7: deleted: record 7 missing" in out


def test_verify_finds_a_deleted_tail_through_the_configmap_checkpoint_in_a_cluster(
    dsn: str,
    connect: Callable[[], psycopg.Connection],
    capsys: pytest.CaptureFixture[str],
    cluster: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lifecycle(AuditLog(connect, ConfigMapCheckpoint(cluster.kube, "default")), "acme")  # as the operator in a Pod
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    args = ("audit", "verify", "--dsn", dsn, "--checkpoint-namespace", "default")
    intact = "audit chain intact: 4 records, up to its checkpoint at record 4, sealed from record 1\n"
    assert paybill(capsys, *args)[:2] == (0, intact)
    seal = cluster.kube.get("v1", "secrets", "paybill-audit-seal", "default")  # the seal: a Secret, not the ConfigMap
    assert set(seal["data"]) == {"chain", "key", "since", "foreign", "prefix"}
    connect().execute("DELETE FROM paybill.audit_log WHERE seq >= 3")
    assert paybill(capsys, *args)[:2] == (1, "audit chain broken at record 3: deleted: records 3 to 4 missing\n")
    elsewhere = paybill(capsys, "audit", "verify", "--dsn", dsn, "--checkpoint-namespace", "elsewhere")
    assert elsewhere[0] == 2 and "holds no seal" in elsewhere[2]  # the records are sealed: no key, no check


def record_step(log: AuditLog, versions: PolicyVersions, workflow: str, step: str, statement: str) -> None:
    """A workflow step's decision, recorded as the operator's run records it (workflows/run.py)."""
    engine = PolicyEngine(POLICY, SCHEMA)
    decision = engine.decide("agent:bot", statement, [], "acme")
    replay = {
        "statement": statement,
        "params": [],
        "tenant": "acme",
        "approvals": [],
        "policyContent": versions.store(POLICY, SCHEMA),
    }
    outcome = StepOutcome(step, decision, decision.allowed, replay=replay)
    log.append("AgentWorkflow", f"tenant-acme/{workflow}", "StepRan", outcome.audit_details("agent:bot", "support"))


def test_replay_reports_the_decisions_an_edited_policy_version_changes(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str]
) -> None:
    log, versions = AuditLog(connect), PolicyVersions(connect)
    lifecycle(log, "acme")  # not decisions: replay skips them
    record_step(log, versions, "refund", "look", "SELECT id, status FROM orders WHERE id = 1")
    record_step(log, versions, "refund", "fix", "UPDATE orders SET status = 'refunded' WHERE id = 1")
    record_step(log, versions, "wipe", "wipe", "DELETE FROM orders WHERE id = 1")
    status, out, err = paybill(capsys, "audit", "replay", "--dsn", dsn)
    assert (status, out, err) == (0, "", "replayed 3 decisions: 0 differ; 0 stored policy versions edited\n")

    # The policy object could be anything by now: replay reads only the stored version, so edit that.
    address = address_of(versions.load(versions.store(POLICY, SCHEMA)).content)  # type: ignore[union-attr]
    connect().execute(
        'UPDATE paybill.policy_versions SET content = replace(content, \'"actions":["update"]\', '
        '\'"actions":["update","delete"]\') WHERE address = %s',
        (address,),
    )
    status, out, err = paybill(capsys, "audit", "replay", "--dsn", dsn)
    lines = [json.loads(line) for line in out.splitlines()]
    assert status == 1 and err == "replayed 3 decisions: 1 differ; 1 stored policy versions edited\n"
    assert [(d.get("name"), d.get("step"), d.get("problem")) for d in lines] == [
        (
            "tenant-acme/wipe",
            "wipe",
            "the decision differs (the stored policy version was edited: it no longer hashes to its address)",
        ),
        (None, None, "edited: no longer hashes to its address"),
    ]
    assert lines[0]["recorded"]["decision"] == "deny" and lines[0]["replayed"]["decision"] == "allow"
    assert lines[0]["seq"] == 7 and lines[1]["policyContent"] == address


def test_export_writes_one_tenants_records_since_a_time_without_secrets(
    dsn: str, connect: Callable[[], psycopg.Connection], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    log = AuditLog(connect)
    lifecycle(log, "acme")
    lifecycle(log, "globex")
    credentials: dict[str, Any] = {
        "tenant": "acme",
        "role": "a_123",
        "password": "s3cret-pw",
        "uri": "postgresql://a_123:s3cret-pw@127.0.0.1:5432/acme",
        "note": "host=127.0.0.1 password=s3cret-pw user=a_123",
    }
    log.append("AgentPolicy", "tenant-acme/support", "Installed", credentials)
    log.append("AgentPolicy", "tenant-globex/support", "Installed", {"tenant": "globex"})
    # `at` is when each record was written: spread them over a week (seq 1-2 and 5-6 before the cut)
    week = datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)
    connect().execute("UPDATE paybill.audit_log SET at = %s + seq * interval '1 day'", (week,))
    since = (week + datetime.timedelta(days=3)).isoformat()

    out = tmp_path / "acme.jsonl"
    assert paybill(capsys, "audit", "export", "--dsn", dsn, "--tenant", "acme", "--since", since, "-o", str(out)) == (
        0,
        "",
        "",
    )
    text = out.read_text()
    lines = [json.loads(line) for line in text.splitlines()]
    assert [(line["seq"], line["kind"], line["name"], line["event"]) for line in lines] == [
        (3, "Tenant", "acme", "Suspend"),
        (4, "Tenant", "acme", "Resume"),
        (9, "AgentPolicy", "tenant-acme/support", "Installed"),
    ]
    assert lines[0]["at"] == (week + datetime.timedelta(days=3)).isoformat()
    assert {line["hashFormat"] for line in lines} == {2}  # what the chain covers: their times too (edited here)
    assert "s3cret-pw" not in text and lines[2]["details"]["role"] == "a_123"
    assert lines[2]["details"]["note"] == "host=127.0.0.1 password=[redacted] user=a_123"
    assert out.stat().st_mode & 0o777 == 0o600

    until = (week + datetime.timedelta(days=4)).isoformat()
    status, text, _ = paybill(
        capsys, "audit", "export", "--dsn", dsn, "--tenant", "acme", "--since", since, "--until", until
    )
    assert status == 0 and [json.loads(line)["seq"] for line in text.splitlines()] == [3]


def test_the_audit_commands_refuse_a_database_without_a_log(dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    for command in (["verify"], ["replay"], ["export", "--tenant", "acme", "--since", "2026-01-01"]):
        status, out, err = paybill(capsys, "audit", *command, "--dsn", dsn)
        assert (status, out) == (2, "") and "holds no Paybill audit log" in err
    with psycopg.connect(dsn) as conn:  # read only: nothing was created
        assert conn.execute("SELECT to_regnamespace('paybill')").fetchone() == (None,)
