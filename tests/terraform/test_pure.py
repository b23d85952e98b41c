"""The runner's pure parts: backoff, error text and redaction, plan summaries and masking, configuration,
and who may be judged the holder of a stale lock."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from paybill.terraform import backoff_delay, backoff_schedule
from paybill.terraform.backend import LockHolder, application_name, holder_gone, schema_for, stale_holders
from paybill.terraform.config import cli_config
from paybill.terraform.errors import error_lines, kept_data, redact
from paybill.terraform.models import ModuleInputs
from paybill.terraform.plans import masked, summarize
from paybill.terraform.runner import destroyed_count


def test_backoff_is_exponential_and_capped() -> None:
    assert backoff_schedule(6, base=5, factor=2, cap=60) == [5, 10, 20, 40, 60, 60]
    assert backoff_delay(10_000, base=1, factor=3, cap=900) == 900  # no overflow far past the cap
    assert backoff_delay(3, base=2, factor=1, cap=10) == 2
    with pytest.raises(ValueError):
        backoff_delay(0)
    with pytest.raises(ValueError):
        backoff_delay(1, base=10, cap=5)


def test_error_lines_keep_terraforms_error_without_the_source_excerpt() -> None:
    stderr = (
        "\n╷\n│ Error: Invalid value\n│ \n│   with aws_db_instance.tenant,\n│   on main.tf line 3, in resource:\n"
        "│    3:   engine = var.engine\n│ \n│ The engine must be postgres.\n╵\n"
    )
    assert error_lines(stderr) == "Error: Invalid value\nThe engine must be postgres."
    assert error_lines("", "one\ntwo\n") == "one\ntwo"


def test_redaction_removes_known_secrets_and_credential_shapes() -> None:
    text = (
        "postgresql://paybill:pa55word@db:5432/x password=hunter22 secret_key=AKIAXYZ "
        "token=abcd1234 and the key sk-live-42"
    )
    redacted = redact(text, ["sk-live-42", "abcd1234", "x"])
    for secret in ("pa55word", "hunter22", "AKIAXYZ", "abcd1234", "sk-live-42"):
        assert secret not in redacted
    assert "postgresql://paybill:***@db" in redacted and "db:5432/x" in redacted  # short values are not hunted


def _change(address: str, actions: list[str], after: object = None, after_sensitive: object = None) -> dict:
    return {
        "address": address,
        "change": {"actions": actions, "before": None, "after": after, "after_sensitive": after_sensitive},
    }


def test_summary_counts_as_terraform_does() -> None:
    plan = {
        "resource_changes": [
            _change("a.create", ["create"]),
            _change("b.update", ["update"]),
            _change("c.replace", ["delete", "create"]),
            _change("d.delete", ["delete"]),
            _change("e.same", ["no-op"]),
            _change("f.read", ["read"]),
        ]
    }
    summary = summarize("acme", plan, "ab" * 32)
    assert (summary.adds, summary.changes, summary.destroys) == (2, 1, 2)
    assert summary.addresses == ("a.create", "b.update", "c.replace", "d.delete")
    assert summary.artifact == f"postgresql:paybill_terraform.plans/acme/{'ab' * 32}"


def test_masking_hides_every_sensitive_value_in_a_plan() -> None:
    plan = {
        "prior_state": {"values": "everything"},
        "resource_changes": [
            _change(
                "db.x",
                ["create"],
                {"password": "p1", "tags": {"a": "b"}, "list": ["s", "t"]},
                {"password": True, "list": [False, True]},
            )
        ],
        "output_changes": {"pw": {"actions": ["create"], "after": "p2", "after_sensitive": True}},
        "planned_values": {
            "outputs": {"pw": {"sensitive": True, "value": "p2"}, "ok": {"value": 1}},
            "root_module": {"resources": [{"values": {"password": "p1"}, "sensitive_values": {"password": True}}]},
        },
        "configuration": {"root_module": {"variables": {"token": {"sensitive": True}, "plan": {}}}},
        "variables": {"token": {"value": "p3"}, "plan": {"value": "gold"}},
    }
    kept = masked(plan)
    assert "prior_state" not in kept
    text = str(kept)
    assert not any(secret in text for secret in ("'p1'", "'p2'", "'p3'", "'t'"))
    assert kept["resource_changes"][0]["change"]["after"]["tags"] == {"a": "b"}
    assert kept["variables"]["plan"] == {"value": "gold"}
    assert kept["planned_values"]["outputs"]["ok"] == {"value": 1}


def test_cli_config_shares_the_cache_and_installs_from_the_mirror_only(tmp_path: Path) -> None:
    text = cli_config(tmp_path / "cache", tmp_path / "mirror")
    assert f'plugin_cache_dir = "{tmp_path}/cache"' in text
    assert f'filesystem_mirror {{\n    path = "{tmp_path}/mirror"' in text and "direct" not in text
    assert "provider_installation" not in cli_config(tmp_path / "cache", None)
    with pytest.raises(ValueError):
        cli_config(Path('/tmp/x"\n}'), None)


def test_tenant_names_map_to_one_schema_and_nothing_else_gets_in() -> None:
    assert schema_for("acme-eu") == "tf_acme_eu"
    for bad in ("Acme", "a_b", "a;drop", "-a", "a" * 41, ""):
        with pytest.raises(ValueError):
            schema_for(bad)
        with pytest.raises(ValueError):
            ModuleInputs(bad, "gold", "eu", "cc")


def _holder(
    application: str, held: float = 100.0, idle: float = 100.0, state: str = "idle", quiet: float = 100.0
) -> LockHolder:
    return LockHolder(
        backend_pid=4242,
        application=application,
        lock_key=7,
        session_seconds=held,
        idle_seconds=idle,
        state=state,
        now=time.time(),
        instance_quiet_seconds=quiet,
    )


def test_only_a_runners_session_whose_run_is_over_is_stale() -> None:
    ours, theirs = "aaaaaaaaaaaa", "bbbbbbbbbbbb"
    long_ago = time.time() - 1000
    own_run = application_name("r1", started=long_ago, instance=ours)
    assert holder_gone(_holder(own_run), {"r1"}, 10, ours) is None  # our run, still going
    assert holder_gone(_holder(own_run), set(), 10, ours) == "run r1 of this runner has ended"
    # another instance, whatever its host and pid say: alive while any of its sessions was active within the limit
    other = application_name("r2", started=long_ago, instance=theirs)
    assert holder_gone(_holder(other), set(), 10, ours) is not None
    assert holder_gone(_holder(other, state="active", quiet=0), set(), 10, ours) is None
    assert holder_gone(_holder(other, state="idle in transaction", quiet=50), set(), 10, ours) is None
    assert holder_gone(_holder(other, quiet=5), set(), 10, ours) is None  # another of its sessions talked
    assert holder_gone(_holder(f"paybill-tf/host-{os.getpid()}/{os.getpid()}/r3"), set(), 10, ours) is None  # old form
    assert holder_gone(_holder("psql"), set(), 10, ours) is None  # not a runner's: never ended
    # held since the run started or the session opened, whichever came later
    assert stale_holders([_holder(application_name("r4", instance=theirs))], set(), 10, ours) == []
    young = _holder(other, held=5)
    assert stale_holders([young], set(), 10, ours) == []  # not older than the limit yet
    old = _holder(other, held=50)
    assert [holder for holder, _ in stale_holders([old, young], set(), 10, ours)] == [old]


def test_a_runners_session_name_keeps_its_instance_run_and_start_and_cuts_only_the_host() -> None:
    name = application_name("0123456789ab", started=1_800_000_000, instance="cafecafecafe", host="h" * 80)
    assert len(name) == 63 and name.startswith("paybill-tf/cafecafecafe/0123456789ab/1800000000/hh")
    identity = _holder(name).identity
    assert identity is not None and (identity.instance, identity.run_id, identity.started) == (
        "cafecafecafe",
        "0123456789ab",
        1_800_000_000,
    )


def test_a_bucket_the_deletion_policy_keeps_is_said_so_and_only_then() -> None:
    aws = "Error: error deleting S3 Bucket (paybill-hooli): BucketNotEmpty: The bucket you tried to delete is not empty"
    gcs = "Error: Error trying to delete bucket paybill-hooli containing objects without `force_destroy` set to true"
    for message in (aws, gcs):
        said = kept_data(message, "snapshot")
        assert said is not None and said.startswith(
            "bucket paybill-hooli holds objects, kept by deletionPolicy snapshot"
        )
        assert "set deletionPolicy destroy" in said and message.splitlines()[0] in said
        assert kept_data(message, "destroy") is None  # under destroy a refusal is an ordinary failure
    assert kept_data("Error: creating RDS DB Instance: InvalidParameterValue", "snapshot") is None


def test_a_database_protected_by_retain_is_said_so_and_only_then() -> None:
    google = (
        'Error: Error when reading or editing SQL Database Instance "paybill-hooli": cannot destroy instance '
        "without setting deletion_protection=false and running `terraform apply`"
    )
    said = kept_data(google, "retain")
    assert said is not None and said.startswith("a database is protected from deletion by deletionPolicy retain")
    assert google in said and "set deletionPolicy destroy" in said
    assert kept_data(google, "destroy") is None


def test_the_destroyed_count_is_read_from_a_destroy_and_from_an_applied_destroy_plan() -> None:
    """A destroy under a policy that keeps data applies its checked destroy plan, whose summary Terraform prints as
    an apply's (both lines as Terraform 1.x prints them)."""
    assert (
        destroyed_count(
            "aws_s3_bucket.tenant: Destruction complete after 1s\n\nDestroy complete! Resources: 3 destroyed.\n"
        )
        == 3
    )
    assert destroyed_count("\nApply complete! Resources: 0 added, 0 changed, 11 destroyed.\n") == 11
    assert destroyed_count("Apply complete! Resources: 2 added, 0 changed, 0 destroyed.\n") == 0
    assert destroyed_count("No changes. No objects need to be destroyed.\n") == 0
