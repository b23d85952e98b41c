"""The module contract, checked by parsing the module (python-hcl2), before any run starts.

In: tenant_id, plan, region, cost_center (required), sizes (from the plan's quotas), pool and deletion_policy
(defaulted; what a destroy does to the tenant's databases and buckets).
Out: endpoint, database_host/port/name/user, database_password (sensitive), network_id, subnet_ids.
Every cloud resource is tagged with the tenant id, plan and cost center in its cloud's convention (TAG_CONVENTIONS:
AWS and Azure `tags`, GCP `labels`, OCI `freeform_tags`, IBM "key:value" user tags); the backend is the runner's;
credentials and regions are never written in a module (they come from the environment and var.region) and every
provider it uses is pinned (a source and a version constraint with an upper bound).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hcl2  # type: ignore[import-untyped]

from .keeping import DATA_FREE, KEEPS_DATA

INPUTS = {
    "tenant_id": "string",
    "plan": "string",
    "region": "string",
    "cost_center": "string",
    "sizes": "map(number)",
    "pool": "string",
    "deletion_policy": "string",
}
DEFAULTED_INPUTS = ("sizes", "pool", "deletion_policy")
OUTPUTS = (
    "endpoint",
    "database_host",
    "database_port",
    "database_name",
    "database_user",
    "database_password",
    "network_id",
    "subnet_ids",
)
SENSITIVE_OUTPUTS = ("database_password",)
TAG_KEYS = ("paybill.dev/tenant", "paybill.dev/plan", "paybill.dev/cost-center")
TAG_VALUES = {
    "paybill.dev/tenant": "var.tenant_id",
    "paybill.dev/plan": "var.plan",
    "paybill.dev/cost-center": "var.cost_center",
}
# Resource types that cannot carry tags (their parent resource does); terraform_data is no cloud object,
# except in the `local` modules, where it stands for one and carries the tags in its input.
UNTAGGABLE = ("aws_iam_role_policy", "aws_iam_role_policy_attachment")
# Resource types holding a tenant's data: a destroy treats them as its deletion policy says (var.deletion_policy),
# and no run deletes one without a copy of its data where the policy keeps data (keeping.py says how each keeps it)
DATA_BEARING = frozenset(KEEPS_DATA)
# The attribute of a data-bearing type that decides what its destroy does to the data: it must follow
# var.deletion_policy (a literal `true` there would delete a tenant's data whatever its Tenant says)
POLICY_ATTRIBUTES = {
    "aws_db_instance": "skip_final_snapshot",
    "aws_s3_bucket": "force_destroy",
    "google_sql_database_instance": "deletion_protection",
    "google_sql_database": "deletion_policy",
    "google_storage_bucket": "force_destroy",
    "ibm_cos_bucket": "force_delete",
}
# In a pool's shared module (many tenants' data, no deletion policy of its own) each of them is set to keep it
POOL_KEEPS = {
    "skip_final_snapshot": "false",
    "force_destroy": "false",
    "force_delete": "false",
    "deletion_protection": "true",
    "deletion_policy": "abandon",
}
# The blocks of a bucket that delete its objects after a while (a transition-only rule is refused with them)
EXPIRY_RULES = {
    "aws_s3_bucket": ("lifecycle_rule",),
    "google_storage_bucket": ("lifecycle_rule",),
    "ibm_cos_bucket": ("expire_rule", "noncurrent_version_expiration"),
}
# The tag that says Paybill made a resource: recovery adopts only resources carrying it (terraform/adoption.py)
MANAGED_BY = ("paybill.dev/managed-by", "paybill")


@dataclass(frozen=True)
class TagConvention:
    """How one cloud's resources carry the tenant id, plan and cost center."""

    provider: str  # the provider's local name: the prefix of its resource types
    source: str  # where required_providers must take it from
    keys: tuple[str, str, str]  # the tag keys of the tenant id, plan and cost center, in that order
    local: str = "tags"  # the locals entry every resource's tags come from
    carrier: str = "tags"  # the resource attribute that carries them
    untaggable: frozenset[str] = frozenset()  # resource types the provider gives no tags (their parent has them)
    nested: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # types that carry them in a block
    key_value_strings: bool = False  # a list of "key:value" strings, not a map
    lowercase: bool = False  # values lowercased in the module (the tenant id, a DNS label, already is)
    context_inputs: Mapping[str, str] = field(default_factory=dict)  # inputs besides INPUTS the cloud needs
    managed_by: tuple[str, str] | None = None  # a tag (key, literal value) every resource carries besides the keys


_KEYS = ("paybill-tenant", "paybill-plan", "paybill-cost-center")  # no '/' (Azure), no '.' (OCI), lowercase (GCP)
TAG_CONVENTIONS: Mapping[str, TagConvention] = {
    "aws": TagConvention("aws", "hashicorp/aws", TAG_KEYS, untaggable=frozenset(UNTAGGABLE), managed_by=MANAGED_BY),
    "azure": TagConvention(
        "azurerm",
        "hashicorp/azurerm",
        _KEYS,
        untaggable=frozenset(
            {
                "azurerm_subnet",
                "azurerm_subnet_network_security_group_association",
                "azurerm_postgresql_flexible_server_database",
                "azurerm_postgresql_flexible_server_firewall_rule",
                "azurerm_storage_container",
                "azurerm_role_assignment",
            }
        ),
    ),
    "gcp": TagConvention(
        "google",
        "hashicorp/google",
        _KEYS,
        local="labels",
        carrier="labels",
        untaggable=frozenset(
            {
                "google_compute_network",
                "google_compute_subnetwork",
                "google_compute_firewall",
                "google_service_networking_connection",
                "google_sql_database",
                "google_sql_user",
                "google_service_account",
                "google_storage_bucket_iam_member",
                "google_storage_bucket_object",
            }
        ),
        nested={"google_sql_database_instance": ("settings", "user_labels")},
        lowercase=True,
    ),
    "oci": TagConvention(
        "oci",
        "oracle/oci",
        _KEYS,
        carrier="freeform_tags",
        untaggable=frozenset({"oci_objectstorage_object", "oci_core_network_security_group_security_rule"}),
        # Terraform cannot read the provider's tenancy: the compartment comes as TF_VAR_compartment_ocid
        context_inputs={"compartment_ocid": "string"},
    ),
    "ibm": TagConvention(
        "ibm",
        "ibm-cloud/ibm",
        _KEYS,
        untaggable=frozenset({"ibm_cos_bucket", "ibm_cos_bucket_object", "ibm_is_security_group_rule"}),
        key_value_strings=True,
        lowercase=True,
    ),
}
# modules of built-in resources only (`local`) tag as AWS does (no cloud object of theirs is ever adopted)
_DEFAULT_CONVENTION = replace(TAG_CONVENTIONS["aws"], managed_by=None)
# Credentials are never written in a module: attributes of these names are generated or come from the environment
_CREDENTIAL = re.compile(
    r"(password|secret|secret_key|access_key|api_key|apikey|private_key|token|fingerprint|credentials)$"
)
_PROVIDER_IDENTITY = frozenset(
    {"client_id", "tenant_id", "subscription_id", "user_ocid", "tenancy_ocid", "profile", "config_file_profile"}
)
_REGION_KEYS = frozenset(
    {"region", "location", "zone", "availability_zone", "availability_domain", "region_location", "bucket_region"}
)
_NOT_REGIONS = frozenset({"global"})  # IBM's location for global services
_KNOWN_REGION = re.compile(
    r"\b(?:"
    r"(?:us|eu|ap|sa|ca|me|af|il|mx)-(?:gov-|iso-|isob-)?(?:north|south|east|west|central|northeast|southeast"
    r"|northwest|southwest)-\d+"  # AWS
    r"|[a-z]{2}-(?:ashburn|phoenix|sanjose|chicago|frankfurt|london|cardiff|amsterdam|zurich|marseille|milan|paris"
    r"|stockholm|madrid|tokyo|osaka|seoul|chuncheon|mumbai|hyderabad|singapore|sydney|melbourne|montreal|toronto"
    r"|saopaulo|vinhedo|santiago|valparaiso|bogota|jeddah|riyadh|dubai|abudhabi|jerusalem|johannesburg|queretaro"
    r"|monterrey|batam)-\d+"  # OCI
    r"|(?:us|europe|asia|australia|northamerica|southamerica|me|africa)-(?:north|south|east|west|central|northeast"
    r"|southeast|northwest|southwest)\d+"  # GCP
    r"|(?:us-south|us-east|eu-gb|eu-de|eu-es|eu-fr2|jp-tok|jp-osa|au-syd|ca-tor|ca-mon|br-sao|in-che|kr-seo)"
    r"(?:-\d)?"  # IBM regions and zones
    r"|(?:east|west|north|south|central|northcentral|southcentral|westcentral|southeast|northeast)"
    r"(?:us|europe|asia|uk|india|japan|australia)\d?"  # Azure
    r"|(?:uk|japan|australia|korea|canada|france|germany|india|brazil|uae|sweden|norway|switzerland|qatar|poland"
    r"|italy|israel|mexico|spain|newzealand|southafrica)(?:east|west|north|south|central|westcentral|southeast)\d?"
    r")\b"
)
# python-hcl2's parser is one shared lark instance: two threads parsing at once get each other's trees
_PARSING = threading.Lock()


def parse(module: Path) -> dict[str, list[Any]]:
    """Every top-level block of every *.tf file in the module, merged by block type."""
    blocks: dict[str, list[Any]] = {}
    for path in sorted(module.glob("*.tf")):
        with path.open() as handle, _PARSING:
            for kind, entries in hcl2.load(handle).items():
                if not kind.startswith("__"):
                    blocks.setdefault(kind, []).extend(entries)
    return blocks


def violations(module: Path, stands_for_cloud_objects: bool = False) -> list[str]:
    """What the module at `module` lacks or breaks of the contract; [] when it meets it.
    `stands_for_cloud_objects`: its terraform_data resources play cloud resources (the `local` modules)."""
    blocks = parse(module)
    convention, found = _convention(blocks)
    found += _unchecked_files(module) + _module_calls(blocks)
    found += _input_violations(_named(blocks.get("variable", [])), convention.context_inputs)
    found += _output_violations(_named(blocks.get("output", [])))
    found += _tag_violations(blocks, stands_for_cloud_objects, convention)
    found += _deletion_policy_violations(blocks) + _unclassified(blocks)
    if any("backend" in block for block in blocks.get("terraform", [])):
        found.append("declares a backend: the runner supplies the pg backend")
    return found + _hygiene_violations(blocks)


def pool_violations(module: Path) -> list[str]:
    """What a pool's shared module (<cloud>/shared) breaks: every taggable resource carries the module's tags,
    no backend, no credentials or regions written in it, its providers pinned; [] when it meets that."""
    blocks = parse(module)
    convention, found = _convention(blocks)
    found += _unchecked_files(module) + _module_calls(blocks)
    found += _carrier_violations(blocks, False, convention)
    found += _pool_keeping_violations(blocks) + _unclassified(blocks)
    if any("backend" in block for block in blocks.get("terraform", [])):
        found.append("declares a backend: the runner supplies the pg backend")
    return found + _hygiene_violations(blocks)


def _module_calls(blocks: dict[str, list[Any]]) -> list[str]:
    """A module it calls is run with it, unread by this check (its resources, tags and deletion settings)."""
    return [
        f"module {_unquote(name)}: a called module is not read by the contract check; write its resources here"
        for entry in blocks.get("module", [])
        for name in entry
        if not name.startswith("__")
    ]


def _unchecked_files(module: Path) -> list[str]:
    """Terraform runs *.tf.json as it runs *.tf, and the runner copies both: the contract reads HCL only, so a JSON
    file would pass unchecked (an untagged bucket, a backend, a type no table classifies)."""
    return [
        f"{path.name}: Terraform JSON is not read by the contract check; write the module in HCL (*.tf)"
        for path in sorted(module.glob("*.tf.json"))
    ]


def _input_violations(variables: dict[str, dict[str, Any]], context: Mapping[str, str]) -> list[str]:
    found = []
    for name, kind in {**INPUTS, **context}.items():
        spec = variables.get(name)
        if spec is None:
            found.append(f"input {name} is missing")
        elif _expression(spec.get("type", "")) != kind:
            found.append(f"input {name} has type {_expression(spec.get('type', ''))}, not {kind}")
        elif ("default" in spec) != (name in DEFAULTED_INPUTS):
            found.append(f"input {name} {'needs' if name in DEFAULTED_INPUTS else 'must not have'} a default")
    found += [
        f"input {name} is not in the contract" for name in variables if name not in INPUTS and name not in context
    ]
    return found


def _output_violations(outputs: dict[str, dict[str, Any]]) -> list[str]:
    found = [f"output {name} is missing" for name in OUTPUTS if name not in outputs]
    found += [
        f"output {name} must be sensitive"
        for name in SENSITIVE_OUTPUTS
        if name in outputs and outputs[name].get("sensitive") is not True
    ]
    found += [
        f"output {name} is sensitive but not in {SENSITIVE_OUTPUTS}"
        for name, spec in outputs.items()
        if spec.get("sensitive") is True and name not in SENSITIVE_OUTPUTS
    ]
    return found


def _convention(blocks: dict[str, list[Any]]) -> tuple[TagConvention, list[str]]:
    """The tag convention of the cloud the module's resources and data sources are of (one cloud per module)."""
    used = _providers_used(blocks)
    clouds = sorted(cloud for cloud, convention in TAG_CONVENTIONS.items() if convention.provider in used)
    if not clouds:
        return _DEFAULT_CONVENTION, []
    found = [f"mixes clouds ({', '.join(clouds)}): a module builds on one cloud"] if len(clouds) > 1 else []
    return TAG_CONVENTIONS[clouds[0]], found


def _tag_violations(
    blocks: dict[str, list[Any]], stands_for_cloud_objects: bool, convention: TagConvention
) -> list[str]:
    tags = next((entry[convention.local] for entry in blocks.get("locals", []) if convention.local in entry), None)
    found = _declared_tag_violations(tags, convention)
    return found + _carrier_violations(blocks, stands_for_cloud_objects, convention)


def _declared_tag_violations(tags: Any, convention: TagConvention) -> list[str]:
    """The module's locals entry maps (or, for IBM, lists as "key:value") the convention's keys to the tenant id, plan
    and cost center inputs, lowercased where the cloud needs it."""
    inputs = dict(zip(convention.keys, ("tenant_id", "plan", "cost_center"), strict=True))
    if convention.key_value_strings:
        listed = [_unquote(str(entry)) for entry in tags] if isinstance(tags, list) else []
        mapped = {key: _expression(t.split(":", 1)[1]) for t in listed for key in inputs if t.startswith(f"{key}:")}
        if set(mapped) != set(inputs) or any(f"var.{inputs[key]}" not in value for key, value in mapped.items()):
            keys = ", ".join(f'"{key}:"' for key in convention.keys)
            return [f"locals.{convention.local} must list {keys} user tags of the tenant id, plan and cost center"]
    else:
        mapped = {_unquote(k): _expression(v) for k, v in tags.items()} if isinstance(tags, dict) else {}
        if convention.managed_by is not None:
            key, value = convention.managed_by
            if mapped.pop(key, None) != value:
                return [f'locals.{convention.local} must map "{key}" to "{value}"']
        if set(mapped) != set(inputs) or any(f"var.{inputs[key]}" not in value for key, value in mapped.items()):
            keys = ", ".join(convention.keys)
            return [f"locals.{convention.local} must map {keys} to the tenant id, plan and cost center"]
    if not convention.lowercase:
        wrong = [key for key, value in mapped.items() if value != f"var.{inputs[key]}"]
        return [f"locals.{convention.local}: {key} must be var.{inputs[key]} itself" for key in wrong]
    return [
        f"locals.{convention.local}: {key} must be lowercased with lower(...) (the cloud's tag rules)"
        for key, value in mapped.items()
        if value != "var.tenant_id" and "lower(" not in value
    ]


def _carrier_violations(
    blocks: dict[str, list[Any]], stands_for_cloud_objects: bool, convention: TagConvention
) -> list[str]:
    found = []
    for kind, name, body in _resources(blocks):
        if kind in convention.untaggable or (kind == "terraform_data" and not stands_for_cloud_objects):
            continue
        path = ("input",) if kind == "terraform_data" else convention.nested.get(kind, (convention.carrier,))
        if f"local.{convention.local}" not in str(_at(body, path)):
            found.append(f"resource {kind}.{name} is not tagged with local.{convention.local}")
    return found


def _deletion_policy_violations(blocks: dict[str, list[Any]]) -> list[str]:
    return [
        f"resource {kind}.{name}: {POLICY_ATTRIBUTES[kind]} must follow var.deletion_policy"
        for kind, name, body in _resources(blocks)
        if kind in POLICY_ATTRIBUTES and "var.deletion_policy" not in str(body.get(POLICY_ATTRIBUTES[kind], ""))
    ]


def _unclassified(blocks: dict[str, list[Any]]) -> list[str]:
    """Resource types keeping.py does not know: whether a delete of one loses data is unknown, so none is run."""
    kinds = sorted({kind for kind, _, _ in _resources(blocks)} - DATA_FREE - DATA_BEARING)
    return [
        f"resource type {kind}: keeping.py does not say whether it holds data or how a delete keeps it"
        for kind in kinds
    ]


def _pool_keeping_violations(blocks: dict[str, list[Any]]) -> list[str]:
    """Every data-bearing resource of a pool keeps the data on a delete: its setting that keeps a copy, or, for a
    type with none, Terraform never destroys it (prevent_destroy); and no rule of it deletes objects on a schedule."""
    found = []
    for kind, name, body in _resources(blocks):
        if kind not in DATA_BEARING:
            continue
        attribute = POLICY_ATTRIBUTES.get(kind)
        protected = any(str(value).lower() == "true" for value in _at(body, ("lifecycle", "prevent_destroy")))
        if attribute is not None and _expression(body.get(attribute, "")).lower() != POOL_KEEPS[attribute]:
            found.append(
                f"resource {kind}.{name}: {attribute} must be {POOL_KEEPS[attribute]} (a pool holds tenants' data)"
            )
        elif attribute is None and not protected:
            found.append(
                f"resource {kind}.{name}: its delete keeps no copy of the tenants' data it holds: a pool's must have "
                "lifecycle { prevent_destroy = true }"
            )
        generated = {key for block in body.get("dynamic") or [] for key in block if not key.startswith("__")}
        found += [
            f"resource {kind}.{name}: {rule} can delete objects on a schedule (a pool holds tenants' data)"
            for rule in EXPIRY_RULES.get(kind, ())
            if rule in body or _unquote(rule) in {_unquote(key) for key in generated}
        ]
    return found


def _at(body: Any, path: tuple[str, ...]) -> list[Any]:
    """The values at `path` in a resource body, through nested blocks (lists of bodies)."""
    values = [body]
    for key in path:
        values = [item for value in values for item in (value if isinstance(value, list) else [value])]
        values = [value[key] for value in values if isinstance(value, dict) and key in value]
    return values


def _hygiene_violations(blocks: dict[str, list[Any]]) -> list[str]:
    """No credential or region written in the module; every provider it uses pinned from its source."""
    found = []
    for where, key, value in _attributes(blocks):
        provider = where.startswith("provider ")
        if provider and (_CREDENTIAL.search(key) or key in _PROVIDER_IDENTITY):
            found.append(f"{where} sets {key}: credentials come from the environment, never the module")
        elif _CREDENTIAL.search(key) and _literal(value):
            found.append(
                f"{where}: {key} is written in the module (credentials come from the environment or are generated)"
            )
        elif key in _REGION_KEYS and _literal(value) and _unquote(str(value)) not in _NOT_REGIONS:
            found.append(f'{where}: {key} is hard-coded ("{_unquote(str(value))}")')
        elif isinstance(value, str) and key != "description" and (region := _KNOWN_REGION.search(value)):
            found.append(f'{where}: hard-codes the region "{region.group(0)}"')
    return found + _pinning_violations(blocks)


def _pinning_violations(blocks: dict[str, list[Any]]) -> list[str]:
    required = {
        _unquote(name): spec
        for block in blocks.get("terraform", [])
        for entry in block.get("required_providers", [])
        for name, spec in entry.items()
        if not name.startswith("__")
    }
    sources = {convention.provider: convention.source for convention in TAG_CONVENTIONS.values()}
    found = []
    for name in sorted(_providers_used(blocks) | set(_named(blocks.get("provider", [])))):
        spec = required.get(name)
        source = _unquote(str(spec.get("source", ""))).lower() if isinstance(spec, dict) else ""
        version = _unquote(str(spec.get("version", ""))) if isinstance(spec, dict) else ""
        if not source or not version:
            found.append(f"provider {name} is not in required_providers with a source and a version")
        elif name in sources and source != sources[name]:
            found.append(f"provider {name} comes from {source}, not {sources[name]}")
        elif not re.search(r"<|~>|^=?\s*\d+(\.\d+)*$", version):
            found.append(f"provider {name} is not pinned: its version constraint needs an upper bound (<, ~> or =)")
    return found


def _providers_used(blocks: dict[str, list[Any]]) -> set[str]:
    kinds = [kind for kind, _, _ in _resources(blocks)] + [kind for kind, _, _ in _resources(blocks, "data")]
    return {kind.split("_", 1)[0] for kind in kinds} - {"terraform"}


def _attributes(blocks: dict[str, list[Any]]) -> Iterator[tuple[str, str, Any]]:
    """(where, attribute name, value) of every attribute of every resource, data source, provider, locals and
    output, nested blocks included."""
    for section in ("resource", "data"):
        for kind, name, body in _resources(blocks, section):
            yield from _walk(f"{'resource' if section == 'resource' else 'data'} {kind}.{name}", body)
    for name, body in _named(blocks.get("provider", [])).items():
        yield from _walk(f"provider {name}", body)
    for entry in blocks.get("locals", []):
        yield from _walk("locals", entry)
    for name, body in _named(blocks.get("output", [])).items():
        yield from _walk(f"output {name}", body)


def _walk(where: str, body: Any) -> Iterator[tuple[str, str, Any]]:
    if isinstance(body, list):
        for item in body:
            yield from _walk(where, item)
    elif isinstance(body, dict):
        for key, value in body.items():
            if key.startswith("__"):
                continue
            if isinstance(value, dict | list) and not _is_map_value(value):
                yield from _walk(where, value)
            else:
                yield where, _unquote(key), value
                if isinstance(value, dict | list):
                    yield from _walk(where, value)


def _is_map_value(value: Any) -> bool:
    """A map or list written as an attribute's value (not a nested block, which hcl2 marks __is_block__)."""
    items = value if isinstance(value, list) else [value]
    return not any(isinstance(item, dict) and item.get("__is_block__") for item in items)


def _literal(value: Any) -> bool:
    """A value written out in the module, not computed: a quoted string without interpolation, or a number."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return True
    return isinstance(value, str) and value.startswith('"') and value.endswith('"') and "${" not in value


def _resources(blocks: dict[str, list[Any]], section: str = "resource") -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (_unquote(kind), _unquote(name), body)
        for entry in blocks.get(section, [])
        for kind, named in entry.items()
        if not kind.startswith("__")
        for name, body in named.items()
        if not name.startswith("__")
    ]


def _named(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {_unquote(name): body for entry in entries for name, body in entry.items() if not name.startswith("__")}


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] == '"' else text


def _expression(value: Any) -> str:
    text = str(value)
    return text[2:-1] if text.startswith("${") and text.endswith("}") else _unquote(text)
