"""Placing a tenant's data, and moving it between isolation models: copy, verify row counts and checksums, cut
over, clean up. The placement record in the operator's database is the commit point; a move interrupted
before it leaves the source authoritative, after it the target, and either resumes."""

from __future__ import annotations

from psycopg import sql

from ..api.plan import Isolation
from ..api.tenant import TableChecksum
from .access import AccessLevels
from .agents import steps
from .agents.hold import AgentWrites
from .connections import Connections
from .control import Control
from .errors import MigrationError
from .migrations import TABLES
from .placement import Placement
from .provisioning import Provisioning
from .removal import Removal


class Moves:
    def __init__(
        self,
        connections: Connections,
        control: Control,
        provisioning: Provisioning,
        access: AccessLevels,
        removal: Removal,
        agents: AgentWrites,
    ) -> None:
        self.connections = connections
        self.control = control
        self.provisioning = provisioning
        self.access = access
        self.removal = removal
        self.agents = agents

    def provision(self, tenant: str, isolation: Isolation | str, password: str) -> Placement:
        """Make sure the tenant's role and data location exist; returns where its data lives now.

        A tenant already placed elsewhere stays there (moving it is `migrate`); what a move left behind is
        `finish`'s and `abandon`'s to remove.
        """
        current, _, _ = self.control.recorded(tenant)
        if current is None:
            current = self.control.placement_for(tenant, isolation)
            self.provisioning.ensure(current, password)
            self.control.place(tenant, str(current.isolation))
            return current
        self.provisioning.ensure(current, password)
        return current

    def migrate(self, tenant: str, isolation: Isolation | str, password: str) -> Placement:
        """Move the tenant's data to `isolation`: copy, verify row counts and checksums, cut over. The source is
        left for `finish` to remove once the tenant's credentials point at the target.

        The source is read-only from the first copy on (reads go on), for the tenant's role and its agents'
        alike, and a transaction open there is ended (rolled back, its client told), so a copy can be repeated
        after a crash and no write lands on the source after it was copied. The placement record is the commit
        point: before it the source is authoritative, after it the target (its agents are installed there
        before `finish` removes the source).
        """
        source, moving_to, previous = self.control.recorded(tenant)
        target = self.control.placement_for(tenant, isolation)
        if source is None:
            return self.provision(tenant, isolation, password)
        if source == target:
            return source
        if moving_to and moving_to != str(target.isolation):
            self.abandon(tenant)  # a move to somewhere else was interrupted: its partial copy goes first
        if previous:
            self.finish(tenant)  # one source at a time is kept
        self.control.place(tenant, str(source.isolation), migrating_to=str(target.isolation))
        self.provisioning.ensure(target, password)
        self.access.set_writable(source, False)
        agents = self.agents.roles(tenant)
        self.agents.end_writers(source, [source.role, *agents])
        self.copy(source, target)
        self.carry_step_records(source, target, agents)
        before, after = checksums(self.connections, source), checksums(self.connections, target)
        if before != after:
            raise MigrationError(
                f"copy to {target.isolation} did not verify: {_diff(before, after)}; "
                f"the tenant stays on {source.isolation}"
            )
        self.control.place(tenant, str(target.isolation), previous=str(source.isolation))
        return target

    def copy(self, source: Placement, target: Placement) -> None:
        session = self.connections.session
        with session(source.database) as src, session(target.database) as dst, dst.transaction():
            for table in reversed(TABLES):
                clear = sql.SQL("DELETE FROM {}").format(sql.Identifier(target.schema, table))
                if target.pooled:
                    clear += sql.SQL(" WHERE tenant_id = {}").format(sql.Literal(target.tenant))
                dst.execute(clear)
            for table in TABLES:
                select = sql.SQL("SELECT * FROM {}").format(sql.Identifier(source.schema, table))
                if source.pooled:
                    select += sql.SQL(" WHERE tenant_id = {}").format(sql.Literal(source.tenant))
                copy_out = sql.SQL("COPY ({}) TO STDOUT (FORMAT binary)").format(select)
                copy_in = sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(sql.Identifier(target.schema, table))
                with src.cursor().copy(copy_out) as reader, dst.cursor().copy(copy_in) as writer:
                    for chunk in reader:
                        writer.write(chunk)

    def carry_step_records(self, source: Placement, target: Placement, agents: list[str]) -> int:
        """The workflow step records of the tenant's agents go with its data (agents/steps.py): a run interrupted
        before the move and taken up after it skips the steps it did. Only theirs, never another tenant's beside
        them in a shared database. Returns how many the source holds."""
        session = self.connections.session
        with self.agents.lock(target.database), session(source.database) as src, session(target.database) as dst:
            return steps.carry(src, dst, agents)

    def finish(self, tenant: str) -> Placement | None:
        """Remove what a completed move left at its source; returns it (None if there was nothing)."""
        current, moving_to, previous = self.control.recorded(tenant)
        if current is None or not previous:
            return None
        left = self.control.placement_for(tenant, previous)
        if left != current:
            self.agents.remove(left)
            self.removal.remove(left)
        self.control.place(tenant, str(current.isolation), migrating_to=moving_to)
        return left

    def abandon(self, tenant: str) -> Placement | None:
        """Roll an interrupted move back: remove its partial target; the source stays authoritative (and is made
        writable again, for the tenant's role and its agents, by the next `set_access`). Returns the target
        removed (None if no move was under way)."""
        current, moving_to, previous = self.control.recorded(tenant)
        if current is None or not moving_to:
            return None
        target = self.control.placement_for(tenant, moving_to)
        if target != current:
            self.removal.remove(target)
        self.control.place(tenant, str(current.isolation), previous=previous)
        return target


def checksums(connections: Connections, placement: Placement) -> dict[str, TableChecksum]:
    """Row count and md5 of the sorted row text of every table: equal data gives equal checksums."""
    result = {}
    with connections.session(placement.database) as conn:
        for table in TABLES:
            query = sql.SQL(
                "SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) FROM {} AS t"
            ).format(sql.Identifier(placement.schema, table))
            if placement.pooled:
                query += sql.SQL(" WHERE t.tenant_id = {}").format(sql.Literal(placement.tenant))
            rows, digest = conn.execute(query).fetchone() or (0, "")
            result[table] = TableChecksum(rows=int(rows), md5=str(digest))
    return result


def _diff(before: dict[str, TableChecksum], after: dict[str, TableChecksum]) -> str:
    return (
        ", ".join(
            f"{table}: {before[table].rows} rows before, {after[table].rows} after"
            for table in before
            if before[table] != after.get(table)
        )
        or "checksums differ"
    )
