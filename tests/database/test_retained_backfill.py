"""Data retained by an operator from before the retained mark existed (issue 13, an outsider's V8/S4 a).

A Tenant offboarded with deletionPolicy retain by such an operator left its placement record and its data, and no
mark (no tenant_owners table at all, or one without the retained column): a new Tenant of the same name would have
got that data silently. The first start of this operator marks what its own records prove was retained (the
placement record still there, and the name's latest audited transition the retaining offboarding), once; anything
else is left as it was. Each case builds the old operator's control database on the session's real PostgreSQL.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from paybill.api.tenant import ADOPT_RETAINED_DATA
from paybill.audit import AuditLog
from paybill.database import NameConflict, TenantDatabases
from paybill.database.control import LastTransition, unmarked_retained
from paybill.database.server import LocalPostgres

_databases = itertools.count()
OFFBOARDED = {"from": "Offboarding", "to": "Offboarded"}


def transition(log: AuditLog, tenant: str, uid: str, to: str, why: str) -> None:
    log.append("Tenant", tenant, "step", {"from": "x", "to": to, "why": why, "uid": uid, "generation": 1})


@pytest.fixture
def legacy(postgres: LocalPostgres) -> Iterator[str]:
    """A database of its own for the operator's records, as an older operator left it: a DSN to it."""
    name = f"paybill_legacy_{next(_databases)}"
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres.dsn, dbname=name)
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def old_operator(dsn: str, owners: str) -> None:
    """The records an operator before the mark left: five names placed, one more whose data was removed."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA paybill")
        conn.execute(
            "CREATE TABLE paybill.placements (tenant text PRIMARY KEY, isolation text NOT NULL, migrating_to text, "
            "previous text, updated_at timestamptz NOT NULL DEFAULT now())"
        )
        placed = ["kept", "taken-since", "live", "unknown", "no-uid"]
        for tenant in placed:
            conn.execute("INSERT INTO paybill.placements (tenant, isolation) VALUES (%s, 'bridge')", (tenant,))
        if owners == "without the retained column":  # the table of 4d7d701, before the mark
            conn.execute(
                "CREATE TABLE paybill.tenant_owners (tenant text PRIMARY KEY, uid text NOT NULL, "
                "claimed_at timestamptz NOT NULL DEFAULT now())"
            )
            for tenant in placed:
                conn.execute(
                    "INSERT INTO paybill.tenant_owners (tenant, uid) VALUES (%s, 'u-' || %s)", (tenant, tenant)
                )
        log = AuditLog(lambda: conn)
        transition(log, "kept", "u-kept", "Active", "plan bridge")
        transition(log, "kept", "u-kept", "Offboarded", "deletion policy retain")
        transition(log, "taken-since", "u-a", "Offboarded", "deletion policy retain")
        transition(log, "taken-since", "u-b", "Active", "plan bridge")  # a later Tenant has it already
        transition(log, "live", "u-live", "Active", "plan bridge")
        transition(log, "removed", "u-removed", "Offboarded", "deletion policy retain")  # record gone: data gone
        log.append("Tenant", "no-uid", "offboarded", {**OFFBOARDED, "why": "deletion policy retain"})


@pytest.mark.parametrize("owners", ["missing", "without the retained column"])
def test_data_retained_before_the_mark_is_marked_from_the_operators_own_records_once(legacy: str, owners: str) -> None:
    old_operator(legacy, owners)
    databases = TenantDatabases(legacy)
    try:
        assert databases.retained_by("kept") == "u-kept"
        for tenant in ("taken-since", "live", "unknown", "no-uid", "removed"):
            assert databases.retained_by(tenant) is None, tenant
        with pytest.raises(NameConflict, match=re.escape(f"{ADOPT_RETAINED_DATA}=u-kept")):
            databases.claim_tenant("kept", "u-new")
        databases.claim_tenant("live", "u-recreated")  # a Tenant recreated under its own name carries on
        with databases.session() as conn:
            conn.execute("UPDATE paybill.tenant_owners SET retained = false WHERE tenant = 'kept'")
    finally:
        databases.close()
    again = TenantDatabases(legacy)  # the next start: marked once, never again (offboarding marks from now on)
    try:
        assert again.retained_by("kept") is None
    finally:
        again.close()


@pytest.mark.parametrize(
    ("last", "owners", "expected"),
    [
        (LastTransition("u1", "Offboarded", "deletion policy retain"), {}, {"a": "u1"}),
        (LastTransition("u1", "Offboarded", "deletion policy retain"), {"a": False}, {"a": "u1"}),
        (LastTransition("u1", "Offboarded", "deletion policy retain"), {"a": True}, {}),  # marked already
        (LastTransition("u1", "Offboarded", "deletion policy snapshot"), {}, {}),
        (LastTransition("u1", "Offboarding", "offboarding requested"), {}, {}),  # not offboarded (yet)
        (LastTransition("u2", "Active", "plan pro"), {}, {}),  # a later Tenant of the name took it
        (LastTransition(None, "Offboarded", "deletion policy retain"), {}, {}),  # whose? unknown: not marked
        (None, {}, {}),  # no audit record: nothing proves it was retained
    ],
)
def test_only_what_the_records_prove_retained_is_marked(
    last: LastTransition | None, owners: dict[str, bool], expected: dict[str, str]
) -> None:
    assert unmarked_retained(["a"], owners, {"a": last} if last else {}) == expected
    assert unmarked_retained([], owners, {"a": last} if last else {}) == {}  # no placement record: data gone
