"""The Terraform modules Paybill ships, one directory per `<cloud>/<model>` (data, not Python code)."""

from __future__ import annotations

from pathlib import Path

from ..models import CLOUDS, MODELS, ModuleRef

ROOT = Path(__file__).parent


def module_dir(cloud: str, model: str) -> Path:
    """The shipped module for an isolation model on a cloud; unknown names are refused, never looked up."""
    ref = ModuleRef(cloud, model)
    path = ROOT / ref.cloud / ref.model
    if not path.is_dir():
        raise ValueError(f"no module for {cloud}/{model}")
    return path


def shipped() -> list[ModuleRef]:
    """The modules the operator runs: those of the clouds it knows (models.CLOUDS)."""
    return [ModuleRef(cloud, model) for cloud, model in checked_by_contract() if cloud in CLOUDS]


def checked_by_contract() -> list[tuple[str, str]]:
    """Every tenant module here as (cloud, model). azure, gcp, oci and ibm are checked by contract only here (their
    providers cannot be installed offline); the operator runs them where a provider mirror holds the provider."""
    return [
        (cloud.name, model.name)
        for cloud in sorted(ROOT.iterdir())
        if cloud.is_dir() and not cloud.name.startswith("_")
        for model in sorted(cloud.iterdir())
        if model.is_dir() and model.name in MODELS
    ]
