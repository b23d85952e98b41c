"""Tenant data in PostgreSQL, per isolation model: `TenantDatabases`, one object composed of a part per concern.

- `placement`: where a tenant's data lives under pooled, bridge and silo (pure), and the shared names;
- `connections`: sessions on the server, kept per thread for the shared databases;
- `control`: the operator's own database: the naming key and role names, placements, owned names;
- `claims`: roles, databases and schemas created for their owner, or checked against that record;
- `provisioning`: a tenant's role, database, schema and tables, row security in the shared databases;
- `access`: full, read_only or none, and the sweep of idle transactions;
- `watchdog` (decisions in `lock_holders`): tenant sessions holding locks that stall other tenants are ended;
- `removal`, `backups`, and `moves` (first placement and migration between isolation models).

Role, schema and database names are opaque (`t_<digest>`, see `ownership`), recorded with their owner in
`paybill.owned`, and never adopted when found without that record. No tenant may connect to the operator's
database (nor postgres, template1). Every step is idempotent.
"""

from __future__ import annotations

from pathlib import Path

from ..api.tenant import TableChecksum
from .access import AccessLevels, end_sessions
from .agents.hold import AgentWrites
from .backups import Backups
from .claims import Claims
from .connections import Connections
from .control import Control
from .moves import Moves, checksums
from .placement import Placement
from .provisioning import Provisioning
from .removal import Removal
from .server import IDLE_IN_TRANSACTION_TIMEOUT
from .watchdog import LockWatchdog


class TenantDatabases:
    """Provision, restrict, back up, migrate and remove tenant data on one PostgreSQL server.

    `admin_dsn` connects as a role that may create roles and databases; its database holds the
    placement records. Connections to the shared databases are kept per thread.
    """

    def __init__(
        self,
        admin_dsn: str,
        backup_dir: Path | None = None,
        idle_in_transaction_timeout: str = IDLE_IN_TRANSACTION_TIMEOUT,
    ) -> None:
        self.connections = Connections(admin_dsn)
        self.control = Control(self.connections)
        self.claims = Claims(self.connections, self.control)
        self.provisioning = Provisioning(self.connections, self.claims, idle_in_transaction_timeout)
        self.agent_writes = AgentWrites(self.connections, self.control, self.provisioning.policy_lock)
        self.access_levels = AccessLevels(self.connections, self.control, self.claims, self.agent_writes)
        self.removal = Removal(self.connections, self.control, self.claims)
        self.backups = Backups(self.connections, backup_dir)
        self.moves = Moves(
            self.connections, self.control, self.provisioning, self.access_levels, self.removal, self.agent_writes
        )

        # What callers use, by concern. Connections:
        self.dsn = self.connections.dsn
        self.login_fields = self.connections.login_fields
        self.logs_in = self.connections.logs_in
        self.connect = self.connections.connect
        self.session = self.connections.session
        self.close = self.connections.close
        # names and records in the operator's database:
        self.naming_key = self.control.naming_key
        self.tenant_role = self.control.tenant_role
        self.agent_role = self.control.agent_role
        self.placement_for = self.control.placement_for
        self.recorded = self.control.recorded
        self.forget = self.control.forget
        self.retained_by = self.control.retained_by
        self.retain_tenant = self.control.retain_tenant
        self.claim_tenant = self.control.claim_tenant
        self.installed_row_policies = self.control.installed_row_policies
        self.remember_row_policies = self.control.remember_row_policies
        self.claim_role = self.claims.claim_role
        self.owns_role = self.claims.owns_role
        # provisioning:
        self.ensure = self.provisioning.ensure
        self.limit_sessions = self.provisioning.limit_sessions
        self.grant_connect = self.provisioning.grant_connect
        self.policy_lock = self.provisioning.policy_lock
        # access levels:
        self.set_access = self.access_levels.set_access
        self.access_of = self.access_levels.access_of
        self.end_idle_transactions = self.access_levels.end_idle_transactions
        self.end_lock_holders = LockWatchdog(self.connections, self.control).end_lock_holders
        self.end_sessions = end_sessions
        # removal, backups, placement and migration:
        self.remove = self.removal.remove
        self.drop_role = self.removal.drop_role
        self.drop_agent_role = self.removal.drop_agent_role
        self.backup = self.backups.backup
        self.provision = self.moves.provision
        self.migrate = self.moves.migrate
        self.finish_move = self.moves.finish
        self.abandon_move = self.moves.abandon

    @property
    def admin_dsn(self) -> str:
        return self.connections.admin_dsn

    @property
    def backup_dir(self) -> Path | None:
        return self.backups.backup_dir

    @property
    def idle_in_transaction_timeout(self) -> str:
        return self.provisioning.idle_in_transaction_timeout

    def checksums(self, placement: Placement) -> dict[str, TableChecksum]:
        """Row count and md5 of the sorted row text of every table: equal data gives equal checksums."""
        return checksums(self.connections, placement)
