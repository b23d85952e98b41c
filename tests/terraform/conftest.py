"""Terraform runner fixtures: a runner per test on the session's real PostgreSQL, and small test modules."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from paybill.database.server import LocalPostgres
from paybill.terraform import ModuleInputs, RunnerConfig, TerraformRunner
from paybill.terraform.backend import schema_for
from paybill.terraform.modules import module_dir

LOCAL_SILO = module_dir("local", "silo")
_counter = iter(range(1_000_000))


@pytest.fixture
def backend_dsn(postgres: LocalPostgres) -> str:
    """The session server's DSN as Terraform's lib/pq needs it (it defaults to sslmode=require)."""
    return psycopg.conninfo.make_conninfo(postgres.dsn, sslmode="disable")


@pytest.fixture
def make_runner(backend_dsn: str, tmp_path: Path) -> Callable[..., TerraformRunner]:
    def make(**options: Any) -> TerraformRunner:
        options.setdefault("timeout", 120)
        return TerraformRunner(RunnerConfig(backend_dsn=backend_dsn, state_dir=tmp_path / "state", **options))

    return make


@pytest.fixture
def tenant(request: pytest.FixtureRequest) -> ModuleInputs:
    """Inputs for a tenant no other test uses (state schemas live as long as the session's server)."""
    name = f"t{next(_counter)}-{abs(hash(request.node.name)) % 10**8}"
    return ModuleInputs(tenant_id=name, plan="gold", region="eu-west-1", cost_center="cc-42", sizes={"storage_gib": 20})


def write_module(directory: Path, body: str) -> Path:
    """A module taking the input contract's variables, with `body` as its resources."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "variables.tf").write_text((LOCAL_SILO / "variables.tf").read_text())
    (directory / "main.tf").write_text(body)
    return directory


def state_resources(dsn: str, tenant_id: str, workspace: str = "default") -> list[str]:
    """Resource addresses in the tenant's state (of `workspace`), read straight from the pg backend's table."""
    schema = schema_for(tenant_id)
    with psycopg.connect(dsn, autocommit=True) as connection:
        if not connection.execute("SELECT to_regclass(%s)", [f"{schema}.states"]).fetchone()[0]:  # type: ignore[index]
            return []
        row = connection.execute(
            sql.SQL("SELECT data FROM {}.states WHERE name = %s").format(sql.Identifier(schema)), [workspace]
        ).fetchone()
    if row is None:
        return []
    import json

    return sorted(f"{r['type']}.{r['name']}" for r in json.loads(row[0]).get("resources", []) if r["mode"] == "managed")


def wait_for(check: Callable[[], Any], timeout: float = 60, what: str | Callable[[], str] = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what if isinstance(what, str) else what()} not met within {timeout}s")
        time.sleep(0.05)


@pytest.fixture
def modules_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "modules"
