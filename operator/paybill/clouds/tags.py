"""Paybill's tags in each cloud's convention, the same keys the Terraform modules write
(terraform/contract.py TAG_CONVENTIONS): AWS `paybill.dev/tenant`...; Azure tags, GCP labels and OCI freeform tags
`paybill-tenant`...; IBM user tags as "paybill-tenant:<id>" strings."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from paybill.terraform.contract import TAG_CONVENTIONS

from .model import Cloud


def keys(cloud: Cloud) -> tuple[str, str, str]:
    """The tenant, plan and cost-center keys."""
    return TAG_CONVENTIONS[cloud.value].keys


def tenant_key(cloud: Cloud) -> str:
    return keys(cloud)[0]


def tags(cloud: Cloud, tenant: str, plan: str, cost_center: str) -> dict[str, str]:
    """The tags a module gives a tenant's resources (values lowercased where the cloud requires it)."""
    lower = TAG_CONVENTIONS[cloud.value].lowercase
    values = (tenant, plan, cost_center)
    return {key: value.lower() if lower else value for key, value in zip(keys(cloud), values, strict=True)}


def user_tags(tenant: str, plan: str, cost_center: str) -> list[str]:
    """IBM's form: "key:value" strings."""
    return [f"{key}:{value}" for key, value in tags(Cloud.IBM, tenant, plan, cost_center).items()]


def read(cloud: Cloud, found: Mapping[str, str] | None) -> tuple[str, str, str]:
    """(tenant, plan, cost center) from a resource's tags; "" for a missing one."""
    found = found or {}
    return tuple(found.get(key, "") for key in keys(cloud))  # type: ignore[return-value]


def read_user_tags(found: Iterable[str]) -> tuple[str, str, str]:
    pairs = dict(tag.split(":", 1) for tag in found if ":" in tag)
    return read(Cloud.IBM, pairs)
