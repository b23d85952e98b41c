"""The operator's own database: the naming key and the role names it keys, where each tenant is placed (and a
migration in flight), every name Paybill created with its owner, and the row security statements installed
for each agent. Closed to everyone else, tenants included (nor may they connect to postgres or template1).

The placement row is the commit point of a migration: before it the source is authoritative, after it the
target.

Data a Tenant kept when it was offboarded with deletionPolicy retain is marked (tenant_owners.retained) so that
no later Tenant of the name gets it by chance. Data retained by an operator from before that mark carries none: the
first start of an operator that has it marks what its own records prove was retained (`unmarked_retained`), once.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql

from ..api.plan import Isolation
from ..api.tenant import ADOPT_RETAINED_DATA, DeletionPolicy, TenantPhase
from .connections import Connections
from .ownership import NameConflict, Record, agent_name, create_idempotently, tenant_name
from .placement import CONTROL_SCHEMA, Placement, placement_at


class Control:
    """The operator's records, in the database `admin_dsn` names."""

    def __init__(self, connections: Connections) -> None:
        self.connections = connections
        self._key: bytes | None = None

    def prepare(self, conn: psycopg.Connection) -> None:
        """The operator's own tables, and its database closed to everyone else (tenants included)."""
        ready = self.connections.ready
        if ("", CONTROL_SCHEMA) in ready:
            return
        with self.connections.setup:
            if ("", CONTROL_SCHEMA) in ready:
                return
            create_idempotently(conn, _create_control_tables)
            _mark_data_retained_before_the_mark(conn)
            for database in {conn.info.dbname, "postgres", "template1"}:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
                    conn.execute(
                        sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(database))
                    )
            ready.add(("", CONTROL_SCHEMA))

    # --- names -----------------------------------------------------------------------------------------

    def naming_key(self) -> bytes:
        """The secret that keys every opaque name; made once, kept in the operator's database."""
        if self._key is None:
            with self.connections.session() as conn:
                self.prepare(conn)
                conn.execute(
                    "INSERT INTO paybill.naming_key (id, key) VALUES (true, %s) ON CONFLICT DO NOTHING",
                    (secrets.token_bytes(32),),
                )
                row = conn.execute("SELECT key FROM paybill.naming_key").fetchone()
            assert row is not None
            self._key = bytes(row[0])
        return self._key

    def tenant_role(self, tenant: str) -> str:
        return tenant_name(self.naming_key(), tenant)

    def agent_role(self, tenant: str, namespace: str, policy: str) -> str:
        return agent_name(self.naming_key(), tenant, namespace, policy)

    def placement_for(self, tenant: str, isolation: Isolation | str) -> Placement:
        return placement_at(tenant, isolation, self.tenant_role(tenant))

    # --- what Paybill created, and for whom ---------------------------------------------------------------

    def record(self, conn: psycopg.Connection, kind: str, name: str, database: str = "") -> Record | None:
        row = conn.execute(
            "SELECT owner, oid FROM paybill.owned WHERE kind = %s AND database = %s AND name = %s",
            (kind, database, name),
        ).fetchone()
        return Record(row[0], None if row[1] is None else int(row[1])) if row else None

    def remember(
        self, conn: psycopg.Connection, kind: str, name: str, owner: str, oid: int | None, database: str = ""
    ) -> None:
        conn.execute(
            "INSERT INTO paybill.owned (kind, database, name, owner, oid) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (kind, database, name) DO UPDATE SET oid = excluded.oid",
            (kind, database, name, owner, oid),
        )

    def forget_object(self, kind: str, name: str, database: str = "") -> None:
        with self.connections.session() as conn:
            self.prepare(conn)
            conn.execute(
                "DELETE FROM paybill.owned WHERE kind = %s AND database = %s AND name = %s", (kind, database, name)
            )

    # --- placements ------------------------------------------------------------------------------------

    def recorded(self, tenant: str) -> tuple[Placement | None, str | None, str | None]:
        """(current placement, isolation a migration is heading to, isolation left to clean up)."""
        with self.connections.session() as conn:
            self.prepare(conn)
            row = conn.execute(
                "SELECT isolation, migrating_to, previous FROM paybill.placements WHERE tenant = %s", (tenant,)
            ).fetchone()
        if row is None:
            return None, None, None
        return self.placement_for(tenant, row[0]), row[1], row[2]

    def place(self, tenant: str, isolation: str, migrating_to: str | None = None, previous: str | None = None) -> None:
        with self.connections.session() as conn:
            self.prepare(conn)
            conn.execute(
                "INSERT INTO paybill.placements (tenant, isolation, migrating_to, previous) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant) DO UPDATE SET isolation = excluded.isolation, "
                "migrating_to = excluded.migrating_to, previous = excluded.previous, updated_at = now()",
                (tenant, isolation, migrating_to, previous),
            )

    def forget(self, tenant: str, keep_claim: bool = False) -> None:
        """The tenant's placement record goes, and its claim on the name, unless `keep_claim`: data stays under the
        name, which no later Tenant may have by chance, so the claim is marked retained (as retain_tenant does)."""
        with self.connections.session() as conn, conn.transaction():
            self.prepare(conn)
            conn.execute("DELETE FROM paybill.placements WHERE tenant = %s", (tenant,))
            if keep_claim:  # marked in the same transaction: no later step can fail between the two
                conn.execute("UPDATE paybill.tenant_owners SET retained = true WHERE tenant = %s", (tenant,))
            else:
                conn.execute("DELETE FROM paybill.tenant_owners WHERE tenant = %s", (tenant,))

    def retained_by(self, tenant: str) -> str | None:
        """The uid of the Tenant that was offboarded keeping its data under this name (deletionPolicy retain), if
        any: that data is never a new Tenant's of the same name."""
        with self.connections.session() as conn:
            self.prepare(conn)
            row = conn.execute(
                "SELECT uid FROM paybill.tenant_owners WHERE tenant = %s AND retained", (tenant,)
            ).fetchone()
        return str(row[0]) if row else None

    def retain_tenant(self, tenant: str) -> None:
        """The Tenant is offboarded and its data kept: from now on no other Tenant of the name may have it."""
        with self.connections.session() as conn:
            self.prepare(conn)
            conn.execute("UPDATE paybill.tenant_owners SET retained = true WHERE tenant = %s", (tenant,))

    def claim_tenant(self, tenant: str, uid: str, adopt: str | None = None) -> str | None:
        """The data kept under a tenant's name is this Tenant object's (its uid). NameConflict if an earlier Tenant
        of the name was offboarded keeping its data (deletionPolicy retain): that is never a new Tenant's, unless it
        adopts it (`adopt`: the earlier Tenant's uid, from its ADOPT_RETAINED_DATA annotation). Returns the uid of
        the Tenant whose retained data this one has just adopted (None: nothing adopted now)."""
        claim = name_claim(tenant, uid, self.retained_by(tenant), adopt)
        if claim.refused is not None:
            raise NameConflict(claim.refused)
        with self.connections.session() as conn:  # a Tenant object recreated (a restore, a re-apply) carries on
            self.prepare(conn)
            if claim.adopts is not None:
                taken = conn.execute(
                    "UPDATE paybill.tenant_owners SET uid = %s, retained = false, claimed_at = now() "
                    "WHERE tenant = %s AND uid = %s AND retained",
                    (uid, tenant, claim.adopts),
                ).rowcount
                if taken != 1:
                    raise NameConflict(f"the data retained under the name {tenant} changed hands while adopted")
                return claim.adopts
            conn.execute(
                "INSERT INTO paybill.tenant_owners (tenant, uid) VALUES (%s, %s) "
                "ON CONFLICT (tenant) DO UPDATE SET uid = excluded.uid WHERE NOT paybill.tenant_owners.retained",
                (tenant, uid),
            )
        return None

    # --- agents' row security policies -------------------------------------------------------------------

    def installed_row_policies(self, database: str, role: str) -> dict[str, str]:
        """The digests of `role`'s row security policy statements last installed in `database`."""
        with self.connections.session() as conn:
            self.prepare(conn)
            return {
                str(statement): str(digest)
                for statement, digest in conn.execute(
                    "SELECT statement, digest FROM paybill.row_policies WHERE database = %s AND role = %s",
                    (database, role),
                )
            }

    def remember_row_policies(self, database: str, role: str, digests: dict[str, str]) -> None:
        with self.connections.session() as conn, conn.transaction():
            self.prepare(conn)
            conn.execute("DELETE FROM paybill.row_policies WHERE database = %s AND role = %s", (database, role))
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO paybill.row_policies (database, role, statement, digest) VALUES (%s, %s, %s, %s)",
                    [(database, role, s, d) for s, d in digests.items()],
                )

    # --- admission: the agents' statements per UTC day, and the stamp's keys (local runs) ---------------------

    def charge_statements(
        self, tenant: str, day: datetime.date, statements: int, limit: int, ticket: str | None = None
    ) -> int | None:
        """Add `statements` to the tenant's count for `day` if it stays within `limit`: the count after it, or None
        (nothing added). One statement, atomic: concurrent charges serialize on the row, and each sees the others'
        sums. With the charge, the admitted stamp's `ticket` (its signature, unique to one admission: the stamp carries
        an admission id) is recorded unclaimed; charged again, it keeps whatever claimed it."""
        with self.connections.session() as conn:
            self.prepare(conn)
            row = conn.execute(
                "WITH charged AS ("
                " INSERT INTO paybill.agent_statements AS s (tenant, day, used)"
                " SELECT %(tenant)s, %(day)s, %(n)s WHERE %(n)s <= %(limit)s"
                " ON CONFLICT (tenant, day) DO UPDATE SET used = s.used + excluded.used"
                " WHERE s.used + excluded.used <= %(limit)s RETURNING used),"
                " ticket AS ("
                " INSERT INTO paybill.admission_tickets (ticket) SELECT %(ticket)s::text FROM charged"
                " WHERE %(ticket)s::text IS NOT NULL"
                " ON CONFLICT (ticket) DO NOTHING RETURNING 1)"  # one admission's: its claim is never freed
                " SELECT used FROM charged",
                {"tenant": tenant, "day": day, "n": statements, "limit": limit, "ticket": ticket},
            ).fetchone()
        return int(row[0]) if row else None

    def claim_ticket(self, ticket: str, uid: str) -> str | None:
        """The uid of the workflow object the admission `ticket` belongs to, claimed for `uid` if no object has it
        yet (the first run of an admitted workflow); None when admission never recorded it."""
        with self.connections.session() as conn:
            self.prepare(conn)
            row = conn.execute(
                "UPDATE paybill.admission_tickets SET uid = COALESCE(uid, %s) WHERE ticket = %s RETURNING uid",
                (uid, ticket),
            ).fetchone()
        return str(row[0]) if row else None

    def statements_used(self, tenant: str, day: datetime.date) -> int:
        with self.connections.session() as conn:
            self.prepare(conn)
            row = conn.execute(
                "SELECT used FROM paybill.agent_statements WHERE tenant = %s AND day = %s", (tenant, day)
            ).fetchone()
        return int(row[0]) if row else 0

    def admission_keys(self, made: Mapping[str, bytes]) -> dict[str, bytes]:
        """The admission stamp's key ring as stored fields (workflows/stamp.py), `made` stored if there is none yet
        (the first operator to ask makes it; the others read it). Where the operator has no namespace to keep it in a
        Secret: its own database is closed to everyone else."""
        with self.connections.session() as conn, conn.transaction():
            self.prepare(conn)
            conn.execute("LOCK TABLE paybill.admission_keys IN SHARE ROW EXCLUSIVE MODE")
            if not conn.execute("SELECT 1 FROM paybill.admission_keys").fetchone():
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO paybill.admission_keys (field, value) VALUES (%s, %s)", list(made.items())
                    )
            return {
                str(f): bytes(v)
                for f, v in conn.execute("SELECT field, value FROM paybill.admission_keys ORDER BY seq")
            }


def _create_control_tables(conn: psycopg.Connection) -> None:
    """The operator's bookkeeping, in its own database: placements, owned names and the naming key."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(CONTROL_SCHEMA)))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.placements (tenant text PRIMARY KEY, "
        "isolation text NOT NULL, migrating_to text, previous text, "
        "updated_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.tenant_owners (tenant text PRIMARY KEY, uid text NOT NULL, "
        "retained boolean NOT NULL DEFAULT false, claimed_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute("ALTER TABLE paybill.tenant_owners ADD COLUMN IF NOT EXISTS retained boolean NOT NULL DEFAULT false")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.owned (kind text NOT NULL, database text NOT NULL, "
        "name text NOT NULL, owner text NOT NULL, oid oid, created_at timestamptz NOT NULL DEFAULT now(), "
        "PRIMARY KEY (kind, database, name))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.row_policies (database text NOT NULL, role name NOT NULL, "
        "statement text NOT NULL, digest text NOT NULL, PRIMARY KEY (database, role, statement))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.naming_key (id boolean PRIMARY KEY CHECK (id), key bytea NOT NULL)"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.control_steps (name text PRIMARY KEY, "
        "done_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.agent_statements (tenant text NOT NULL, day date NOT NULL, "
        "used integer NOT NULL DEFAULT 0 CHECK (used >= 0), PRIMARY KEY (tenant, day))"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.admission_tickets (ticket text PRIMARY KEY, uid text, "
        "admitted_at timestamptz NOT NULL DEFAULT now())"
    )
    conn.execute(
        "CREATE TABLE IF NOT EXISTS paybill.admission_keys (seq bigserial, field text PRIMARY KEY, "
        "value bytea NOT NULL)"
    )
    conn.execute(sql.SQL("REVOKE ALL ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(CONTROL_SCHEMA)))


RETAINED_MARKS_STEP = "mark data retained before the retained mark existed"
RETAINED_WHY = f"deletion policy {DeletionPolicy.RETAIN}"  # what the audit record of a retaining offboarding says


@dataclass(frozen=True)
class LastTransition:
    """The latest lifecycle transition the audit log holds for a tenant name."""

    uid: str | None
    to: str | None
    why: str | None


def unmarked_retained(
    placed: Iterable[str], owners: Mapping[str, bool], last: Mapping[str, LastTransition]
) -> dict[str, str]:
    """The names whose data was retained but carries no mark, with the uid of the Tenant that kept it. Sound
    evidence only, from the operator's own records: the placement record is still there (offboarding with any
    other policy removes it with the data), and the name's latest transition in the hash-chained audit log is the
    Tenant of that uid reaching Offboarded under deletionPolicy retain (every operator version wrote it so). A
    later Tenant's transition after it, no audit record, or a record without a uid prove nothing: not marked.
    `owners`: whether each name's claim is marked retained already."""
    marks = {}
    for tenant in placed:
        seen = last.get(tenant)
        if seen is None or seen.uid is None or owners.get(tenant, False):
            continue
        if (seen.to, seen.why) == (TenantPhase.OFFBOARDED, RETAINED_WHY):
            marks[tenant] = seen.uid
    return marks


def _mark_data_retained_before_the_mark(conn: psycopg.Connection) -> None:
    """`unmarked_retained`, marked, once per operator database (the operators starting serialize on the table
    that records it; after it, offboarding marks what it retains itself)."""
    with conn.transaction():
        conn.execute("LOCK TABLE paybill.control_steps IN SHARE ROW EXCLUSIVE MODE")
        if conn.execute("SELECT 1 FROM paybill.control_steps WHERE name = %s", (RETAINED_MARKS_STEP,)).fetchone():
            return
        placed = [str(tenant) for (tenant,) in conn.execute("SELECT tenant FROM paybill.placements")]
        owners = {str(t): bool(r) for t, r in conn.execute("SELECT tenant, retained FROM paybill.tenant_owners")}
        last: dict[str, LastTransition] = {}
        if conn.execute("SELECT to_regclass('paybill.audit_log')").fetchone() != (None,):
            last = {
                str(name): LastTransition(uid, to, why)
                for name, uid, to, why in conn.execute(
                    "SELECT DISTINCT ON (name) name, details->>'uid', details->>'to', details->>'why' "
                    "FROM paybill.audit_log WHERE kind = 'Tenant' AND name = ANY(%s) AND details ? 'to' "
                    "ORDER BY name, seq DESC",
                    (placed,),
                )
            }
        for tenant, uid in unmarked_retained(placed, owners, last).items():
            conn.execute(
                "INSERT INTO paybill.tenant_owners (tenant, uid, retained) VALUES (%s, %s, true) "
                "ON CONFLICT (tenant) DO UPDATE SET uid = excluded.uid, retained = true",
                (tenant, uid),
            )
        conn.execute("INSERT INTO paybill.control_steps (name) VALUES (%s)", (RETAINED_MARKS_STEP,))


@dataclass(frozen=True)
class NameClaim:
    """What a Tenant object may do with the data kept under its name: have it (neither field set), adopt an earlier
    Tenant's retained data (`adopts`: that Tenant's uid), or nothing (`refused`: why)."""

    adopts: str | None = None
    refused: str | None = None


def name_claim(tenant: str, uid: str, retained_by: str | None, adopt: str | None) -> NameClaim:
    """Data an earlier Tenant of the name kept (deletionPolicy retain) goes to a new Tenant only when it names that
    Tenant's uid in its ADOPT_RETAINED_DATA annotation: a deliberate restore, never a coincidence of names."""
    if retained_by is None or retained_by == uid:
        return NameClaim()
    if adopt == retained_by:
        return NameClaim(adopts=retained_by)
    if adopt:
        return NameClaim(
            refused=f"annotation {ADOPT_RETAINED_DATA}={adopt} names another Tenant than the one whose data is "
            f"retained under the name {tenant} (uid {retained_by}); nothing is adopted"
        )
    return NameClaim(refused=retained_message(tenant, retained_by))


def retained_message(tenant: str, owner: str) -> str:
    return (
        f"the data of an earlier Tenant named {tenant} (uid {owner}) was retained when it was offboarded; it is "
        "never given to a new Tenant of the same name by chance: remove it, choose another name, or take it over "
        f"deliberately (a restore) by annotating this Tenant {ADOPT_RETAINED_DATA}={owner}"
    )
