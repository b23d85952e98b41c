"""An AgentPolicy installed while another session changes the same catalog row (a GRANT on the tenant's schema)
fails with "tuple concurrently updated": a transient failure, tried again within seconds, not after a minute."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from paybill.database.server import LocalPostgres
from test_tenant_lifecycle import agent_policy, onboard, wait_phase, wait_policy


def test_a_policy_install_racing_another_grant_on_its_schema_is_ready_soon_after(
    operator: Any, postgres: LocalPostgres
) -> None:
    name = onboard(operator, "pooled")
    namespace = f"tenant-{name}"
    wait_phase(operator, name, "Active")
    other = f"race_{name.replace('-', '_')}"
    with psycopg.connect(postgres.dsn, dbname="paybill_pooled", autocommit=True) as holder:
        holder.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(other)))
        try:
            with holder.transaction():  # a GRANT on the schema the policy's GRANTs change, not yet committed
                holder.execute(sql.SQL("GRANT USAGE ON SCHEMA app TO {}").format(sql.Identifier(other)))
                operator.kube.apply(agent_policy(namespace))
                with psycopg.connect(postgres.dsn, autocommit=True) as watcher:

                    def install_waits_on_it() -> bool:
                        row = watcher.execute(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'paybill_pooled' "
                            "AND wait_event_type = 'Lock' AND query ILIKE 'GRANT%%' AND pid <> %s",
                            (holder.info.backend_pid,),
                        ).fetchone()
                        return row is not None and row[0] > 0

                    operator.eventually(install_waits_on_it, timeout=40)
            wait_policy(operator, namespace, "Ready", database="paybill_pooled")  # 40 s: the retry is not a minute
        finally:
            holder.execute(sql.SQL("REVOKE ALL ON SCHEMA app FROM {}").format(sql.Identifier(other)))
            holder.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(other)))
