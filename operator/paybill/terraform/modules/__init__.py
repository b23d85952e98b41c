"""The Terraform modules Paybill ships, one directory per `<cloud>/<model>` (data, not Python code)."""

from __future__ import annotations

from pathlib import Path

from ..models import ModuleRef

ROOT = Path(__file__).parent


def module_dir(cloud: str, model: str) -> Path:
    """The shipped module for an isolation model on a cloud; unknown names are refused, never looked up."""
    ref = ModuleRef(cloud, model)
    path = ROOT / ref.cloud / ref.model
    if not path.is_dir():
        raise ValueError(f"no module for {cloud}/{model}")
    return path


def shipped() -> list[ModuleRef]:
    return [
        ModuleRef(cloud.name, model.name)
        for cloud in sorted(ROOT.iterdir())
        if cloud.is_dir() and not cloud.name.startswith("_")
        for model in sorted(cloud.iterdir())
        if model.is_dir() and model.name in ("silo", "pooled", "bridge")
    ]
