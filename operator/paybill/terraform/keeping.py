"""What deleting a resource that holds a tenant's data does to that data, read from a saved plan (`show -json`).

Deny by default: every resource type holds data unless DATA_FREE lists it (networks, identities, markers, the
stateless compute instances of the shipped modules). A data-bearing type is listed in KEEPS_DATA with how its delete
keeps a copy of the data, judged on the values the resource has before the delete (what Terraform's delete acts
on), or with None: its delete takes the data with it and nothing Terraform sets can keep a copy (Azure flexible
servers and storage, OCI and IBM databases); a type in neither table is treated as None. The module contract refuses
a type in neither table, so a new one is classified before it is ever applied.

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
    "ibm_resource_instance": None,  # a service instance: Databases, or the COS instance holding buckets
}

# Types that hold no tenant data: deleting one loses nothing a copy could keep
DATA_FREE = frozenset(
    {
        "terraform_data",
        # networks, addresses, firewalls and private DNS
        "aws_vpc",
        "aws_subnet",
        "aws_security_group",
        "aws_db_subnet_group",
        "azurerm_resource_group",  # its provider refuses to delete one that holds resources it does not manage
        "azurerm_virtual_network",
        "azurerm_subnet",
        "azurerm_network_security_group",
        "azurerm_subnet_network_security_group_association",
        "azurerm_network_interface",
        "azurerm_private_dns_zone",
        "azurerm_private_dns_zone_virtual_network_link",
        "google_compute_network",
        "google_compute_subnetwork",
        "google_compute_firewall",
        "google_compute_global_address",
        "google_service_networking_connection",
        "oci_core_vcn",
        "oci_core_subnet",
        "oci_core_security_list",
        "ibm_is_vpc",
        "ibm_is_subnet",
        # identities, grants and database users (the data stays where it is)
        "aws_iam_role",
        "aws_iam_policy",
        "aws_iam_role_policy",
        "aws_iam_role_policy_attachment",
        "azurerm_user_assigned_identity",
        "azurerm_role_assignment",
        "google_service_account",
        "google_storage_bucket_iam_member",
        "google_sql_user",
        "ibm_iam_service_id",
        "ibm_iam_service_policy",
        # the empty marker object of a pooled tenant's prefix (its objects are the pool bucket's)
        "aws_s3_bucket_object",
        "google_storage_bucket_object",
        "ibm_cos_bucket_object",
        "oci_objectstorage_object",
        # the shipped modules' compute instances run the tenant's application and keep nothing of its data
        "azurerm_linux_virtual_machine",
        "google_compute_instance",
        "oci_core_instance",
        "ibm_is_instance",
    }
)


def holds_data(kind: str) -> bool:
    """Whether a resource type may hold a tenant's data: every type but DATA_FREE's."""
    return kind not in DATA_FREE


def _deletes(plan: Mapping[str, Any]) -> list[tuple[str, str, Values]]:
    """(address, type, values before) of every data-bearing resource the plan deletes, replacements included."""
    return [
        (str(change.get("address")), str(change.get("type")), change["change"].get("before") or {})
        for change in plan.get("resource_changes") or []
        if holds_data(str(change.get("type"))) and "delete" in (change.get("change") or {}).get("actions", ())
    ]


def deleted(plan: Mapping[str, Any]) -> list[str]:
    """The data-bearing resources the plan deletes or replaces, by address."""
    return [address for address, _, _ in _deletes(plan)]


def unkept(plan: Mapping[str, Any]) -> list[str]:
    """The data-bearing resources the plan deletes with no copy of their data kept, each with why."""
    found = []
    for address, kind, before in _deletes(plan):
        keeps = KEEPS_DATA.get(kind)
        if kind not in KEEPS_DATA:
            found.append(f"{address} (a {kind}: no type Paybill knows to hold no data or to keep it on delete)")
        elif keeps is None:
            found.append(f"{address} (deleting a {kind} deletes its data: Terraform cannot keep a copy)")
        elif not keeps(before):
            found.append(f"{address} (its state says no copy is kept on delete)")
    return found


# What carrying the deletion policy into the state before a destroy may change: the attributes that decide what a
# delete keeps (a final snapshot and its name, emptying a bucket, protection, abandoning a database, backups kept),
# at any depth, and the nested settings that are only that (Cloud SQL's backups outliving the instance)
POLICY_SETTINGS = frozenset(
    {
        "skip_final_snapshot",
        "final_snapshot_identifier",
        "force_destroy",
        "force_delete",
        "deletion_protection",
        "deletion_protection_enabled",
        "deletion_policy",
        "delete_contents_on_destroy",
        "retain_backups_on_delete",
    }
)
POLICY_PATHS = frozenset({("settings", "backup_configuration", "enabled")})
# Labels on anything, and any update of a resource that holds no data (a network's tags put back after drift), change
# nothing of the data: the settle may carry them along
METADATA = frozenset({"tags", "tags_all", "labels", "terraform_labels", "effective_labels", "freeform_tags"})
IN_PLACE = frozenset({"no-op", "update", "read"})


def _changed(before: Any, after: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths (keys only, list positions dropped) where `after` differs from `before`."""
    if isinstance(before, Mapping) and isinstance(after, Mapping):
        return [p for key in {*before, *after} for p in _changed(before.get(key), after.get(key), (*path, str(key)))]
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        return [p for old, new in zip(before, after, strict=True) for p in _changed(old, new, path)]
    return [] if before == after else [path]


def _unknown(marks: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """The paths Terraform marks known only after the apply (`after_unknown`)."""
    if marks is True:
        return [path]
    if isinstance(marks, Mapping):
        return [p for key, value in marks.items() for p in _unknown(value, (*path, str(key)))]
    if isinstance(marks, list):
        return [p for value in marks for p in _unknown(value, path)]
    return []


def _policy_only(path: tuple[str, ...]) -> bool:
    return any(key in POLICY_SETTINGS for key in path) or path in POLICY_PATHS or path[:1] in {(k,) for k in METADATA}


def beyond_policy(plan: Mapping[str, Any], settings_only: bool = True) -> list[str]:
    """What a plan made to carry the deletion policy into the state would do besides: a create, delete or replace,
    or an update of a resource holding data beyond those settings and its labels (a module changed since the last
    apply, whose changes wait for their own apply and, under approval manual, a person): each as "address (what)".
    Updates of resources holding no data (drift put back on a network) go along; with `settings_only` False (the
    module is the one last applied: only drift and imports to put right), every update in place does."""
    found = []
    for change in plan.get("resource_changes") or []:
        actions, address = set(change["change"].get("actions", ())), str(change.get("address"))
        if not actions <= IN_PLACE:
            found.append(f"{address} ({'/'.join(change['change']['actions'])})")
            continue
        if not settings_only or not holds_data(str(change.get("type"))):
            continue
        body = change["change"]
        paths = _changed(body.get("before") or {}, body.get("after") or {}) + _unknown(body.get("after_unknown"))
        other = sorted({".".join(path) for path in paths if not _policy_only(path)})
        if "update" in actions and other:
            found.append(f"{address} (update of {', '.join(other)})")
    return found
