"""A real PostgreSQL database with the policy test schema, two pooled tenants and the support agent's role."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from paybill.api.agentpolicy import AgentPolicy, AgentPolicySpec
from paybill.database.agents.grants import agent_role, apply_grants
from paybill.database.server import LocalPostgres
from paybill.policy import PolicyEngine, Schema
from paybill.policy.check import load_policy

HERE = Path(__file__).parent
SCHEMA_SQL = (HERE / "schema.sql").read_text()
PRINCIPAL = "agent:support-bot"
TENANTS = ("acme", "globex")


def load_cases(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (HERE / name).read_text().splitlines() if line.strip()]


def support_policy() -> AgentPolicy:
    return load_policy(HERE / "support-policy.yaml")


def schema() -> Schema:
    return Schema.from_ddl(SCHEMA_SQL)


def spec(**changes: object) -> AgentPolicySpec:
    data = support_policy().spec.model_dump(mode="json")
    data.update(changes)
    return AgentPolicySpec.model_validate(data)


@pytest.fixture(scope="module")
def engine() -> PolicyEngine:
    return PolicyEngine(support_policy().spec, schema())


def seed(conn: psycopg.Connection) -> None:
    conn.execute(SCHEMA_SQL)
    for t, tenant in enumerate(TENANTS):
        for n in range(1, 6):
            key = t * 100 + n
            conn.execute(
                "INSERT INTO customers (id, tenant_id, name, email, ssn) VALUES (%s, %s, %s, %s, %s)",
                (key, tenant, f"{tenant}-customer-{n}", f"c{n}@{tenant}.test", f"{key:09d}"),
            )
            for k in range(4):
                conn.execute(
                    "INSERT INTO orders (id, tenant_id, customer_id, status, total, paid) "
                    "VALUES (%s, %s, %s, %s, %s, %s)",
                    (key * 10 + k, tenant, key, ("open", "paid", "shipped", "canceled")[k], 10 * (k + 1) + n, k == 1),
                )
        conn.execute(
            "INSERT INTO secrets (id, tenant_id, api_key) VALUES (%s, %s, %s)", (t + 1, tenant, f"key-{tenant}")
        )


@dataclass
class PolicyDatabase:
    """Admin DSN (owner of the tables) and a DSN logging in as the agent's role for one tenant."""

    admin_dsn: str
    dsn_for_role: Any

    def engine(self, spec: AgentPolicySpec | None = None) -> PolicyEngine:
        return PolicyEngine(spec or support_policy().spec, schema())

    def grant(self, spec: AgentPolicySpec, tenant: str, name: str = "support") -> str:
        """Apply the database side of `spec` for `tenant`; returns a DSN logged in as the agent role."""
        role = agent_role(name, tenant)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            apply_grants(conn, self.engine(spec).rules, schema(), role, tenant, password="agent-secret")
        return self.dsn_for_role(role)


@pytest.fixture(scope="session")
def policy_db(postgres: LocalPostgres) -> Iterator[PolicyDatabase]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS policy_test")
        conn.execute("CREATE DATABASE policy_test")
    admin = psycopg.conninfo.make_conninfo(postgres.dsn, dbname="policy_test")
    with psycopg.connect(admin, autocommit=True) as conn:
        seed(conn)
        conn.execute(sql.SQL("REVOKE ALL ON SCHEMA public FROM PUBLIC"))

    def dsn_for_role(role: str) -> str:
        return psycopg.conninfo.make_conninfo(admin, user=role, password="agent-secret")

    yield PolicyDatabase(admin, dsn_for_role)
