"""The engine's compiled build: which modules mypyc compiles, and a guard that never runs a stale one.

`setup.py` compiles these modules of the same, type-checked source (mypyc, at install: `make install`) and
records each source's digest in `compiled.json` beside them. CPython imports an extension module before the
`.py` of the same name, so a source edited after the build would be shadowed by the old binary: when a module's
source no longer matches the digest it was compiled from, every compiled module is imported from its source
instead (the same code, slower; `make compile` builds them again). Standard library only: `setup.py` reads
`COMPILED` from here before anything is installed.
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED = ("tree", "analysis", "validate", "rewrite", "engine")
MANIFEST = "compiled.json"
HERE = Path(__file__).resolve().parent
logger = logging.getLogger(__name__)


def digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()


def built(directory: Path = HERE) -> list[str]:
    """The modules of `COMPILED` that have an extension module in `directory`."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return [name for name in COMPILED if any((directory / f"{name}{suffix}").exists() for suffix in suffixes)]


def stale(directory: Path = HERE) -> list[str]:
    """Compiled modules whose source is not the one they were compiled from (or with no record of it)."""
    try:
        recorded = json.loads((directory / MANIFEST).read_text())
    except (OSError, ValueError):
        recorded = {}
    return [name for name in built(directory) if recorded.get(name) != digest(directory / f"{name}.py")]


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' `.py` files, ahead of the extension modules beside them."""

    def __init__(self, package: str, directory: Path) -> None:
        self.sources = {f"{package}.{name}": directory / f"{name}.py" for name in COMPILED}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def guard(package: str, directory: Path = HERE) -> list[str]:
    """Import every compiled module from its source when any of them is stale; returns the stale ones."""
    found = stale(directory)
    if found:
        logger.warning(
            "%s: %s compiled from an older source; running the source (make compile builds it again)",
            package,
            ", ".join(found),
        )
        sys.meta_path.insert(0, _FromSource(package, directory))
    return found
