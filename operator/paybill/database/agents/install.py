"""An AgentPolicy installed in a tenant's database: the agent's login role, its grants and row-level security.

The policy is checked against the tenant's live schema first (a policy that names unknown columns or
unsafe functions is refused before anything changes). The grants follow the tenant's access: a
read-only tenant's agents keep only their reads, a suspended tenant's agents cannot log in; where the tenant's
role may not write (its data is moving away), the agent's writes are kept and held (`hold`), not granted.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import psycopg
from psycopg import errors, sql

from ...api.agentpolicy import AgentPolicySpec, Effect
from ...api.tenant import Access
from ...lifecycle.agentpolicy import Installation
from ...policy.engine import PolicyEngine
from ...policy.schema import Schema
from .. import AGENT_CONNECTION_LIMIT, DDL_LOCK_TIMEOUT, DatabaseUnavailable, Placement, TenantDatabases
from ..access import tenant_writable
from ..migrations import LEDGER
from ..ownership import agent_identity
from . import steps
from .catalog import read_schema
from .grants import apply_grants

AGENT_ROLE_ATTRIBUTES = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOINHERIT NOBYPASSRLS"


def tenant_schema(databases: TenantDatabases, placement: Placement) -> Schema:
    """The tables an agent may be granted: the tenant's schema without Paybill's own bookkeeping."""
    schema = read_schema(databases.dsn(placement.database), placement.schema)
    return Schema(schema.name, {name: table for name, table in schema.tables.items() if name != LEDGER}, schema.inbound)


def for_access(spec: AgentPolicySpec, access: Access) -> AgentPolicySpec:
    """The policy as it applies while the tenant has `access`: read-only drops every allowed write."""
    if access != Access.READ_ONLY:
        return spec
    rules = []
    for rule in spec.rules:
        if rule.effect == Effect.ALLOW:
            reads = [action for action in rule.actions if action == "select"]
            if not reads:
                continue
            rule = rule.model_copy(update={"actions": reads})
        rules.append(rule)
    return spec.model_copy(update={"rules": rules})


def engine_for(databases: TenantDatabases, placement: Placement, spec: AgentPolicySpec, access: Access) -> PolicyEngine:
    """The engine that checks an agent's statements on this tenant: the policy as the access allows, the live
    schema. Raises PolicyError when the policy does not fit the schema."""
    return PolicyEngine(for_access(spec, access), tenant_schema(databases, placement))


def install(
    databases: TenantDatabases,
    placement: Placement,
    policy: str,
    namespace: str,
    spec: AgentPolicySpec,
    password: str,
    access: Access,
    previous_database: str | None = None,
) -> Installation:
    """Create or update the agent role for AgentPolicy namespace/policy on the tenant. Raises PolicyError for
    a policy that cannot apply, NameConflict when the role's name is taken by a role Paybill did not create
    for this policy (never adopted: its password and grants stay as they are).

    When the tenant's data has moved (`previous_database`), the role's grants there are dropped."""
    engine = engine_for(databases, placement, spec, access)
    schema = engine.schema
    role = databases.agent_role(placement.tenant, namespace, policy)
    databases.claim_role(role, agent_identity(placement.tenant, namespace, policy), AGENT_ROLE_ATTRIBUTES)
    if previous_database not in (None, placement.database):
        _drop_owned(databases, previous_database, role)
    databases.limit_sessions(role, AGENT_CONNECTION_LIMIT)
    with databases.policy_lock(placement.database):
        # the tenant's own login, read under the lock suspension takes to lock its agents out: an install that
        # read the tenant as active before it was suspended gives its agent no login after
        login = access != Access.NONE and databases.access_of(placement) != Access.NONE
        installed = databases.installed_row_policies(placement.database, role)
        with databases.session(placement.database) as conn:
            in_place = _grant_in_one_transaction(
                conn, databases, engine, placement, role, password if login else None, installed
            )
        databases.remember_row_policies(placement.database, role, in_place)
    databases.grant_connect(placement.database, role)
    with databases.session(placement.database) as conn:
        conn.execute(
            sql.SQL("ALTER ROLE {} SET search_path = {}").format(sql.Identifier(role), sql.Identifier(schema.name))
        )
        tables = tuple(
            name
            for (name,) in conn.execute(
                "SELECT table_name FROM information_schema.role_table_grants WHERE grantee = %s AND table_schema = %s "
                "UNION SELECT table_name FROM information_schema.role_column_grants WHERE grantee = %s "
                "AND table_schema = %s ORDER BY 1",
                (role, schema.name, role, schema.name),
            )
        )
    if not login:
        with databases.session() as conn:
            databases.end_sessions(conn, role)
    return Installation(role, engine.version, tables)


DEADLOCK_ATTEMPTS = 3  # a deadlock with another session's DDL on the shared tables rolls back the whole transaction


def _grant_in_one_transaction(
    conn: psycopg.Connection,
    databases: TenantDatabases,
    engine: PolicyEngine,
    placement: Placement,
    role: str,
    password: str | None,
    installed: Mapping[str, str],
) -> dict[str, str]:
    """The grants, row policies and write hold, committed together (a held agent never writes in between); run
    again when PostgreSQL picked this transaction to break a deadlock (none of it was kept)."""
    attempt = 1
    while True:
        try:
            with conn.transaction():
                in_place = apply_grants(
                    conn, engine.rules, engine.schema, role, placement.tenant, password=password, installed=installed
                )
                steps.prepare(conn, role)  # the agent records its workflow steps in their own transactions
                if tenant_writable(conn, placement):
                    databases.agent_writes.forget(placement.database, role)
                else:
                    databases.agent_writes.hold(conn, placement, role, replace=True)
            return in_place
        except errors.DeadlockDetected:
            if attempt == DEADLOCK_ATTEMPTS:
                raise DatabaseUnavailable(
                    f"changing the row security of {placement.database} deadlocked {attempt} times; will retry"
                ) from None
            attempt += 1
            time.sleep(0.1 * attempt)
        except errors.LockNotAvailable:
            raise DatabaseUnavailable(
                f"changing the row security of {placement.database} waited "
                f"{DDL_LOCK_TIMEOUT} for tenants' open transactions; will retry"
            ) from None


def uninstall(databases: TenantDatabases, policy: str, namespace: str, tenant: str, database: str | None) -> bool:
    """Drop the agent role, its grants and its row-level security policies; False if there was no role of
    this policy's (a role of the same name Paybill did not create for it is left alone)."""
    role = databases.agent_role(tenant, namespace, policy)
    return databases.drop_agent_role(
        role, agent_identity(tenant, namespace, policy), (database,) if database is not None else ()
    )


def _drop_owned(databases: TenantDatabases, database: str | None, role: str) -> None:
    """Revoke the role's privileges in `database`, and drop its RLS policies there (if the database exists)."""
    with databases.session() as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone() is None:
            return
    with databases.session(database) as conn, conn.transaction():  # its policies: ACCESS EXCLUSIVE locks
        conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(DDL_LOCK_TIMEOUT)))
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
