"""What a planned delete does to a tenant's data (keeping.py), on plans shaped like `terraform show -json`."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from paybill.terraform import keeping
from paybill.terraform.contract import DATA_BEARING, POLICY_ATTRIBUTES, violations
from paybill.terraform.modules import ROOT


def _plan(*changes: tuple[str, str, list[str], dict[str, Any]]) -> dict[str, Any]:
    return {
        "resource_changes": [
            {"address": f"{kind}.{name}", "type": kind, "change": {"actions": actions, "before": before}}
            for kind, name, actions, before in changes
        ]
    }


DELETE = ["delete"]


@pytest.mark.parametrize(
    ("kind", "before", "kept"),
    [
        ("aws_db_instance", {"skip_final_snapshot": False, "final_snapshot_identifier": "x-final-1a2b"}, True),
        ("aws_db_instance", {"skip_final_snapshot": True, "final_snapshot_identifier": "x-final-1a2b"}, False),
        ("aws_db_instance", {"skip_final_snapshot": False, "final_snapshot_identifier": None}, False),
        ("aws_db_instance", {}, False),
        ("aws_s3_bucket", {"force_destroy": False}, True),
        ("aws_s3_bucket", {"force_destroy": True}, False),
        ("aws_s3_bucket", {}, False),
        ("google_sql_database_instance", {"deletion_protection": True}, True),
        (
            "google_sql_database_instance",
            {"deletion_protection": False, "settings": [{"final_backup_config": [{"enabled": True}]}]},
            True,
        ),
        (
            "google_sql_database_instance",
            {"deletion_protection": False, "settings": [{"final_backup_config": [{"enabled": False}]}]},
            False,
        ),
        ("google_sql_database_instance", {"deletion_protection": False, "settings": [{}]}, False),
        ("google_sql_database", {"deletion_policy": "ABANDON"}, True),
        ("google_sql_database", {"deletion_policy": "DELETE"}, False),
        ("google_storage_bucket", {"force_destroy": "false"}, False),  # only the literal false keeps objects
        ("ibm_cos_bucket", {"force_delete": False}, True),
        ("ibm_cos_bucket", {}, False),  # the IBM provider's default deletes every object
        ("oci_objectstorage_bucket", {}, True),
        ("azurerm_postgresql_flexible_server", {"anything": True}, False),
        ("azurerm_storage_account", {}, False),
        ("oci_psql_db_system", {}, False),
        ("ibm_database", {"deletion_protection": True}, False),
    ],
)
def test_a_delete_keeps_data_only_where_the_state_says_a_copy_is_kept(
    kind: str, before: dict[str, Any], kept: bool
) -> None:
    unkept = keeping.unkept(_plan((kind, "tenant", DELETE, before)))
    assert (unkept == []) is kept
    if not kept:
        assert unkept[0].startswith(f"{kind}.tenant (")


def test_a_replacement_is_a_delete_and_updates_or_other_types_are_not() -> None:
    unsafe = {"skip_final_snapshot": True, "final_snapshot_identifier": "x"}
    plan = _plan(
        ("aws_db_instance", "replaced", ["delete", "create"], unsafe),
        ("aws_db_instance", "replaced_first", ["create", "delete"], unsafe),
        ("aws_db_instance", "updated", ["update"], unsafe),
        ("aws_security_group", "gone", DELETE, {}),
        ("terraform_data", "database", DELETE, {}),
    )
    assert keeping.deleted(plan) == ["aws_db_instance.replaced", "aws_db_instance.replaced_first"]
    assert [entry.split(" ")[0] for entry in keeping.unkept(plan)] == keeping.deleted(plan)


def test_a_plan_without_changes_or_with_a_malformed_change_deletes_nothing() -> None:
    assert keeping.deleted({}) == keeping.unkept({"resource_changes": None}) == []
    assert keeping.unkept({"resource_changes": [{"type": "aws_db_instance", "change": {"actions": ["delete"]}}]})


def test_every_data_bearing_type_is_classified_and_every_policy_attribute_can_keep() -> None:
    assert frozenset(keeping.KEEPS_DATA) == DATA_BEARING
    assert all(keeping.KEEPS_DATA[kind] is not None for kind in POLICY_ATTRIBUTES)


def test_a_type_paybill_does_not_know_holds_data_and_cannot_keep_it() -> None:
    """Re-attack: an aws_redshift_cluster (any type the table missed) was replaced by an auto apply and deleted under
    snapshot with no copy. Fail closed: only DATA_FREE types hold no data."""
    unsafe = {"skip_final_snapshot": False, "final_snapshot_identifier": "x"}
    plan = _plan(
        ("aws_redshift_cluster", "tenant", ["delete", "create"], unsafe),
        ("aws_kms_key", "tenant", DELETE, {}),
        ("aws_vpc", "tenant", DELETE, {}),
    )
    assert keeping.deleted(plan) == ["aws_redshift_cluster.tenant", "aws_kms_key.tenant"]
    assert [entry.split(" ")[0] for entry in keeping.unkept(plan)] == keeping.deleted(plan)
    assert "no type Paybill knows" in keeping.unkept(plan)[0]
    assert not DATA_BEARING & keeping.DATA_FREE


def test_the_contract_refuses_a_module_with_a_type_keeping_does_not_know(tmp_path: Path) -> None:
    module = tmp_path / "silo"
    shutil.copytree(ROOT / "aws" / "silo", module)
    (module / "warehouse.tf").write_text(
        'resource "aws_redshift_cluster" "tenant" {\n  cluster_identifier = "x"\n  tags = local.tags\n}\n'
    )
    assert violations(module) == [
        "resource type aws_redshift_cluster: keeping.py does not say whether it holds data or how a delete keeps it"
    ]


def _update(
    address: str, before: dict[str, Any], after: dict[str, Any], actions: tuple[str, ...] = ("update",)
) -> dict[str, Any]:
    kind = address.split(".")[0]
    return {"address": address, "type": kind, "change": {"actions": list(actions), "before": before, "after": after}}


def test_settling_the_policy_may_update_the_deletion_settings_and_nothing_else() -> None:
    """An outsider's review: the settle step applied whatever else the module had changed (an object expiry rule)
    before a destroy under snapshot, with no approval, and the kept bucket's objects expired a day later."""
    settled = _update(
        "aws_db_instance.tenant",
        {"skip_final_snapshot": True, "final_snapshot_identifier": None, "engine": "postgres"},
        {"skip_final_snapshot": False, "final_snapshot_identifier": "paybill-acme-final-1", "engine": "postgres"},
    )
    assert keeping.beyond_policy({"resource_changes": [settled]}) == []
    expiry = _update(
        "aws_s3_bucket.tenant",
        {"force_destroy": True, "lifecycle_rule": []},
        {"force_destroy": False, "lifecycle_rule": [{"expiration": [{"days": 1}]}]},
    )
    replaced = _update("aws_db_instance.tenant", {}, {}, ("delete", "create"))
    untouched = _update("aws_security_group.database", {"name": "x"}, {"name": "x"}, ("no-op",))
    assert keeping.beyond_policy({"resource_changes": [expiry, replaced, untouched]}) == [
        "aws_s3_bucket.tenant (update of lifecycle_rule)",
        "aws_db_instance.tenant (delete/create)",
    ]


def test_cloud_sqls_nested_backup_settings_are_deletion_settings_too() -> None:
    """A re-attack: the GCP modules carry the policy in settings.backup_configuration.enabled and
    settings.retain_backups_on_delete; compared by top-level key, the settle refused every GCP destroy."""
    settings = {"tier": "db-custom-2-7680", "backup_configuration": [{"enabled": True, "start_time": "03:00"}]}
    before = {"deletion_protection": False, "settings": [{**settings, "retain_backups_on_delete": True}]}
    after = {
        "deletion_protection": False,
        "settings": [
            {
                **settings,
                "backup_configuration": [{"enabled": False, "start_time": "03:00"}],
                "retain_backups_on_delete": False,
            }
        ],
    }
    settled = _update("google_sql_database_instance.tenant", before, after)
    assert keeping.beyond_policy({"resource_changes": [settled]}) == []
    resized = _update(
        "google_sql_database_instance.tenant",
        before,
        {**before, "settings": [{**settings, "tier": "db-f1-micro", "retain_backups_on_delete": True}]},
    )
    assert keeping.beyond_policy({"resource_changes": [resized]}) == [
        "google_sql_database_instance.tenant (update of settings.tier)"
    ]


def test_drift_put_back_on_what_holds_no_data_and_labels_go_along_with_the_settle() -> None:
    """CI-like run r22: a tenant whose VPC tag drifted could never be destroyed (the settle's targeted plan puts the
    VPC's tags back, and that was refused); a network holds no data, and a label is no data either."""
    vpc = _update(
        "aws_vpc.tenant",
        {"tags": {"cc": "x"}, "cidr_block": "10.0.0.0/16"},
        {"tags": {"cc": "y"}, "cidr_block": "10.0.0.0/16"},
    )
    bucket = _update(
        "aws_s3_bucket.tenant",
        {"force_destroy": False, "tags_all": {"a": "1"}},
        {"force_destroy": True, "tags_all": {"a": "2"}},
    )
    assert keeping.beyond_policy({"resource_changes": [vpc, bucket]}) == []
    created = _update("aws_vpc.tenant", {}, {}, ("create",))
    assert keeping.beyond_policy({"resource_changes": [created]}) == ["aws_vpc.tenant (create)"]
