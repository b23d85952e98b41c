"""The PostgreSQL run records both executors (TerraformRunner, JobExecutor) keep: what built each workspace, and
the configuration each saved plan was made from."""

from __future__ import annotations

from . import keeping
from . import workspaces as records
from .connections import Connections
from .models import ModuleInputs, PlanSummary
from .plans import PlanStore


class RunRecords:
    """Run records through `connections` (set by the executor's constructor)."""

    connections: Connections

    def record_applied(
        self, inputs: ModuleInputs, module: str, credentials_secret: str | None, config_digest: str | None = None
    ) -> None:
        """Before an apply: the module (by name) and inputs that build `inputs.workspace`, for its destroy; after
        one that succeeded, with the config digest it applied."""
        with self.connections.connection() as connection:
            records.record_applied(
                connection,
                inputs.tenant_id,
                inputs.workspace,
                module,
                inputs.variables(),
                credentials_secret,
                config_digest,
            )

    def record_planned(self, tenant_id: str, plan_hash: str, config_digest: str) -> None:
        """A saved plan's configuration (an approval applies it only while that is still the configuration)."""
        with self.connections.connection() as connection:
            records.record_planned(connection, tenant_id, plan_hash, config_digest)

    def planned_digest(self, tenant_id: str, plan_hash: str) -> str | None:
        with self.connections.connection() as connection:
            return records.planned_digest(connection, tenant_id, plan_hash)

    def planned_summary(self, tenant_id: str, plan_hash: str) -> PlanSummary:
        """A saved plan's summary (KeyError: no such plan of the tenant)."""
        return PlanStore(self.connections).summary(tenant_id, plan_hash)

    def planned_deletions(self, tenant_id: str, plan_hash: str) -> list[str]:
        """The resources holding data a saved plan deletes or replaces (keeping.deleted)."""
        return keeping.deleted(PlanStore(self.connections).plan_json(tenant_id, plan_hash) or {})

    def close(self) -> None:
        """Close the backend connections kept between runs (at shutdown)."""
        self.connections.close()
