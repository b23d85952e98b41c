"""PostgreSQL: tenant data per isolation model (`TenantDatabases`), and a local throwaway server (`server`).

Import the tenant data API from here; the modules behind it are split by concern (see `tenants`).
"""

from .backups import Backup, restore_backup
from .errors import DatabaseUnavailable, MigrationError, UnsafeBackupDirectory
from .ownership import NameConflict
from .placement import BRIDGE_DATABASE, POOLED_DATABASE, Placement, placement_at
from .provisioning import AGENT_CONNECTION_LIMIT, DDL_LOCK_TIMEOUT, TENANT_CONNECTION_LIMIT, enable_row_security
from .tenants import TenantDatabases

__all__ = [
    "AGENT_CONNECTION_LIMIT",
    "BRIDGE_DATABASE",
    "DDL_LOCK_TIMEOUT",
    "POOLED_DATABASE",
    "TENANT_CONNECTION_LIMIT",
    "Backup",
    "DatabaseUnavailable",
    "MigrationError",
    "NameConflict",
    "Placement",
    "TenantDatabases",
    "UnsafeBackupDirectory",
    "enable_row_security",
    "placement_at",
    "restore_backup",
]
