"""A Plan's cloud preflight, decided: where the operator may point an adapter (PAYBILL_CLOUD_ENDPOINTS, loopback
only), whether the cloud's Terraform provider is in the provider mirror, what the Plan's CloudReady condition says
for a preflight's answer, and whether a tenant of the Plan may start a run (its CloudReady is True for the Plan's
generation). Pure: handlers/plan.py reads the Secret, builds the adapter and writes the condition."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from paybill.terraform.contract import TAG_CONVENTIONS

from .model import Cloud, CloudError, Preflight
from .retry import redact

ENDPOINTS_ENV = "PAYBILL_CLOUD_ENDPOINTS"  # e.g. "aws=http://127.0.0.1:5000,azure=http://127.0.0.1:5001" (tests)
CONDITION = "CloudReady"
PROVIDER_MISSING = "ProviderMissing"


def endpoints(value: str | None) -> dict[Cloud, str]:
    """`cloud=url` pairs, comma separated: each cloud's API at a loopback address (a fake), for tests and the demo.
    Anything else is refused (ValueError): credentials never go to an address the operator was merely told of."""
    found: dict[Cloud, str] = {}
    for item in filter(None, (part.strip() for part in (value or "").split(","))):
        name, _, url = item.partition("=")
        try:
            cloud = Cloud(name.strip())
        except ValueError:
            raise ValueError(f"{ENDPOINTS_ENV}: unknown cloud {name.strip()!r}") from None
        if not _loopback(url.strip()):
            raise ValueError(f"{ENDPOINTS_ENV}: {cloud} endpoint must be http(s)://<loopback address>:<port>")
        found[cloud] = url.strip().rstrip("/")
    return found


def _loopback(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.username:
        return False
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def provider_source(cloud: Cloud) -> str:
    return TAG_CONVENTIONS[cloud.value].source


def provider_missing(cloud: Cloud, mirror: Path | None) -> str | None:
    """Why the cloud's Terraform provider cannot be installed (None: the mirror holds it). Providers come only from
    the filesystem mirror (registry.terraform.io/<namespace>/<type>/, packed or unpacked), never a registry."""
    source = provider_source(cloud)
    if mirror is None:
        return f"provider {source} is not available: no provider mirror (PAYBILL_TERRAFORM_PROVIDER_MIRROR) is set"
    directory = mirror / "registry.terraform.io" / source
    if not directory.is_dir() or not any(directory.iterdir()):
        return f"provider {source} is not in the provider mirror ({directory} is missing or empty)"
    return None


def readiness(answer: Preflight | CloudError, secrets: Iterable[str] = ()) -> tuple[bool, str, str]:
    """The CloudReady condition for a preflight's answer: its reason names the cause, the message carries the
    cloud's error code and never a credential."""
    if isinstance(answer, CloudError):
        message = f"{answer.cloud} answered {answer.code}" + (f" (HTTP {answer.status})" if answer.status else "")
        return False, "CloudError", redact(f"{message}: {answer.message}", secrets)[:500]
    return answer.ok, answer.reason, redact(f"{answer.cloud}: {answer.message}", secrets)[:500]


def gate(plan: Mapping[str, Any] | None) -> str | None:
    """Why a tenant of this Plan may not start a run yet (None: its cloud preflight passed for its current spec)."""
    if plan is None:
        return None
    provisioning = (plan.get("spec") or {}).get("provisioning") or {}
    if provisioning.get("cloud", "local") == "local":
        return None
    generation = (plan.get("metadata") or {}).get("generation")
    conditions = (plan.get("status") or {}).get("conditions") or []
    said = next((c for c in conditions if c.get("type") == CONDITION), None)
    if said is None or (generation is not None and said.get("observedGeneration") != generation):
        return f"cloud preflight of plan {plan['metadata']['name']} has not passed yet"
    if said.get("status") != "True":
        return f"cloud preflight failed ({said.get('reason')}): {said.get('message')}"
    return None
