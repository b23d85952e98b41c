"""What deleting a resource that holds a tenant's data does to that data, read from a saved plan (`show -json`).

Every data-bearing resource type is listed in KEEPS_DATA with how its delete keeps a copy of the data, judged on
the values the resource has before the delete (what Terraform's delete acts on), or with None: its delete takes
the data with it and nothing Terraform sets can keep a copy (Azure flexible servers and storage, OCI and IBM
databases). A type not listed here is no data-bearing type; contract.DATA_BEARING is this table's keys.

Two checks use it. A destroy under a deletion policy that keeps data (snapshot, retain) deletes nothing while one
of its deletes would lose data (`unkept`); an ordinary apply never deletes or replaces a data-bearing resource
without a person approving that very plan (`deleted`), whatever the policy.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Values = Mapping[str, Any]


def _literal(values: Values, key: str, kept: object) -> bool:
    return values.get(key) is kept


def _first(values: Values, *path: str) -> Values:
    """The first block at `path` (Terraform's JSON gives every nested block as a list)."""
    for key in path:
        blocks = values.get(key)
        values = blocks[0] if isinstance(blocks, list) and blocks and isinstance(blocks[0], Mapping) else {}
    return values


def _final_snapshot(values: Values) -> bool:
    return _literal(values, "skip_final_snapshot", False) and bool(values.get("final_snapshot_identifier"))


def _protected_or_final_backup(values: Values) -> bool:
    final_backup = _first(values, "settings", "final_backup_config")
    return _literal(values, "deletion_protection", True) or _literal(final_backup, "enabled", True)


def _refuses_when_not_empty(key: str) -> Callable[[Values], bool]:
    """A bucket whose provider deletes it only when it holds no object, unless `key` is true."""
    return lambda values: _literal(values, key, False)


# type -> whether its delete keeps a copy of the data, from its values before the delete (None: it never does)
KEEPS_DATA: Mapping[str, Callable[[Values], bool] | None] = {
    "aws_db_instance": _final_snapshot,
    "aws_rds_cluster": _final_snapshot,
    "aws_s3_bucket": _refuses_when_not_empty("force_destroy"),
    "aws_dynamodb_table": lambda values: _literal(values, "deletion_protection_enabled", True),
    "aws_ebs_volume": None,
    "aws_efs_file_system": None,
    "google_sql_database_instance": _protected_or_final_backup,
    # a database inside an instance: deleted before the instance (and its final backup) unless abandoned
    "google_sql_database": lambda values: values.get("deletion_policy") == "ABANDON",
    "google_storage_bucket": _refuses_when_not_empty("force_destroy"),
    "google_bigquery_dataset": _refuses_when_not_empty("delete_contents_on_destroy"),
    "google_compute_disk": None,
    "ibm_cos_bucket": _refuses_when_not_empty("force_delete"),
    "oci_objectstorage_bucket": lambda values: True,  # OCI deletes only an empty bucket, always
    "azurerm_postgresql_flexible_server": None,
    "azurerm_postgresql_flexible_server_database": None,
    "azurerm_postgresql_server": None,
    "azurerm_managed_disk": None,
    "azurerm_storage_account": None,
    "azurerm_storage_container": None,
    "oci_psql_db_system": None,
    "oci_core_volume": None,
    "ibm_database": None,
    "ibm_is_volume": None,
}


def _deletes(plan: Mapping[str, Any]) -> list[tuple[str, str, Values]]:
    """(address, type, values before) of every data-bearing resource the plan deletes, replacements included."""
    return [
        (str(change.get("address")), str(change.get("type")), change["change"].get("before") or {})
        for change in plan.get("resource_changes") or []
        if change.get("type") in KEEPS_DATA and "delete" in (change.get("change") or {}).get("actions", ())
    ]


def deleted(plan: Mapping[str, Any]) -> list[str]:
    """The data-bearing resources the plan deletes or replaces, by address."""
    return [address for address, _, _ in _deletes(plan)]


def unkept(plan: Mapping[str, Any]) -> list[str]:
    """The data-bearing resources the plan deletes with no copy of their data kept, each with why."""
    found = []
    for address, kind, before in _deletes(plan):
        keeps = KEEPS_DATA[kind]
        if keeps is None:
            found.append(f"{address} (deleting a {kind} deletes its data: Terraform cannot keep a copy)")
        elif not keeps(before):
            found.append(f"{address} (its state says no copy is kept on delete)")
    return found
