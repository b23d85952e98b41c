"""What a planned delete does to a tenant's data (keeping.py), on plans shaped like `terraform show -json`."""

from __future__ import annotations

import re
from typing import Any

import pytest

from paybill.terraform import keeping
from paybill.terraform.contract import DATA_BEARING, POLICY_ATTRIBUTES, parse
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


# a resource type whose name says it holds data (a database, a bucket, storage, a volume, a disk, a file system)
_HOLDS_DATA = re.compile(r"db_instance|database|sql|bucket|storage|volume|disk|db_system|file_system|table|dataset")
# matched by name, yet holds none: a user, a marker object, an IAM binding, a network link or a firewall rule
_HOLDS_NONE = re.compile(
    r"_user$|bucket_object$|objectstorage_object$|_iam_|_firewall_rule$|subnet_group$|storage_account_network"
)


def test_every_shipped_module_type_that_holds_data_is_classified() -> None:
    """A module given a new kind of database or bucket must say how its delete keeps data (or that it cannot)."""
    unclassified = set()
    for module in sorted(path.parent for path in ROOT.glob("*/*/main.tf") if path.parts[-3] != "local"):
        for block in parse(module).get("resource", []):
            for quoted in block:
                kind = quoted.strip('"')
                if _HOLDS_DATA.search(kind) and not _HOLDS_NONE.search(kind) and kind not in DATA_BEARING:
                    unclassified.add(f"{module.parent.name}/{module.name}: {kind}")
    assert sorted(unclassified) == []
