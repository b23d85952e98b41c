"""The engine's compiled build: which modules mypyc compiles, and a guard that never runs a stale one.

`setup.py` compiles these modules of the same, type-checked source (mypyc, at install: `make install`) and, only
once the build succeeded, records in `compiled.json` beside them the digest of every source the build read (the
compiled modules and the package modules they import) and of every binary it produced. CPython imports an
extension module before the `.py` of the same name, so a source edited after the build would be shadowed by the
old binary: when any recorded source or binary no longer matches (or there is no record), every compiled module
is imported from its source instead (the same code, slower; `make compile` builds them again). Standard library
only: `setup.py` uses this module before anything is installed.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

COMPILED = ("tree", "analysis", "validate", "rewrite", "engine")
NATIVE = ("treedicts", "treeprotobuf")  # modules written in C (built from `<name>.c`, when setup.py can), guarded alike
MANIFEST = "compiled.json"
SOURCE_ENV = "PAYBILL_POLICY_SOURCE"  # =1: run the compiled modules from source (debugging; the differential test)
HERE = Path(__file__).resolve().parent
logger = logging.getLogger(__name__)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def built(directory: Path = HERE, modules: Sequence[str] = COMPILED) -> list[str]:
    """The `modules` (by default those of `COMPILED`) that have an extension module in `directory`."""
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    return [name for name in modules if any((directory / f"{name}{suffix}").exists() for suffix in suffixes)]


def build_inputs(directory: Path = HERE) -> list[str]:
    """The sources a build reads, relative to `directory`: the compiled modules and every module of the package
    they import (mypyc may fold an imported constant into the binary)."""
    present = [name for name in COMPILED if (directory / f"{name}.py").is_file()]
    inputs = {f"{name}.py" for name in present} | {f"{n}.c" for n in NATIVE if (directory / f"{n}.c").is_file()}
    inputs |= {header.name for header in directory.glob("*.h")}  # what the C modules include of ours
    # what decides the C modules' contents (setup.py: the field numbers, include paths, accepted pglast version;
    # constraints.txt: the pglast whose sources they are built from), where the build reads them (not in a wheel)
    inputs |= {
        f"../../../{name}" for name in ("setup.py", "constraints.txt") if (directory / "../../.." / name).is_file()
    }
    for name in present:
        tree = ast.parse((directory / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level > 0 and node.module:
                path = Path(*[".."] * (node.level - 1), *node.module.split("."))
                module = directory / path
                if module.with_suffix(".py").is_file():
                    inputs.add(f"{path}.py")
                elif module.is_dir():
                    inputs.add(f"{path}/__init__.py")  # a C module of NATIVE: its source is an input already
    return sorted(inputs)


def record(directory: Path, binaries: Sequence[Path]) -> None:
    """After a build succeeded: what it was built from and what it produced (`binaries`, anywhere)."""
    manifest = {
        "sources": {name: digest(directory / name) for name in build_inputs(directory)},
        "binaries": {os.path.relpath(binary, directory): digest(binary) for binary in binaries},
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))


def stale(directory: Path = HERE) -> list[str]:
    """What differs from the build record, relative to `directory` (changed or missing sources and binaries, a
    compiled module with no recorded binary, or no record at all); empty when the compiled build is current or
    nothing is compiled."""
    modules = built(directory, COMPILED + NATIVE)
    if not modules:
        return []
    try:
        recorded = json.loads((directory / MANIFEST).read_text())
        sources, binaries = dict(recorded["sources"]), dict(recorded["binaries"])
    except (OSError, ValueError, TypeError, KeyError):
        return [MANIFEST]
    recorded_files = sorted({**sources, **binaries}.items())
    found = [name for name, expected in recorded_files if _digest_or_none(directory / name) != expected]
    suffixes = importlib.machinery.EXTENSION_SUFFIXES
    found += [
        f"{name}{suffix}"
        for name in modules
        for suffix in suffixes
        if (directory / f"{name}{suffix}").exists() and f"{name}{suffix}" not in binaries
    ]
    return found + _shadowed(directory, binaries)


def _shadowed(directory: Path, binaries: dict[str, str]) -> list[str]:
    """Recorded top-level binaries (mypyc's shared library, which the compiled modules import by name) that
    Python would import from elsewhere: an earlier sys.path entry (the current directory, PYTHONPATH) holding
    another build of the same name."""
    found = []
    for name in binaries:
        path = (directory / name).resolve()
        if path.parent == directory.resolve():
            continue  # a module of the package: imported by its package's path, not sys.path
        module = path.name.split(".")[0]
        loaded = sys.modules.get(module)
        origin = getattr(loaded, "__file__", None) if loaded else _origin(module)
        if origin is None or Path(origin).resolve() != path:
            found.append(f"{module} (imported from {origin or 'nowhere'})")
    return found


def _origin(module: str) -> str | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    return spec.origin if spec else None


def _digest_or_none(path: Path) -> str | None:
    try:
        return digest(path)
    except OSError:
        return None


class _FromSource(importlib.abc.MetaPathFinder):
    """Finds the compiled modules' `.py` files, ahead of the extension modules beside them; hides the C modules."""

    def __init__(self, package: str, directory: Path) -> None:
        self.sources = {f"{package}.{name}": directory / f"{name}.py" for name in COMPILED}
        self.native = {f"{package}.{name}" for name in NATIVE}

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.native:  # no source to run: its callers take their pure-Python path
            raise ModuleNotFoundError(f"{fullname}: the compiled build is not current", name=fullname)
        source = self.sources.get(fullname)
        return None if source is None else importlib.util.spec_from_file_location(fullname, source)


def guard(package: str, directory: Path = HERE) -> list[str]:
    """Import every compiled module from its source when the build is stale (or PAYBILL_POLICY_SOURCE=1);
    returns what differs."""
    if os.environ.get(SOURCE_ENV) == "1":
        sys.meta_path.insert(0, _FromSource(package, directory))
        return []
    found = stale(directory)
    if found:
        logger.warning(
            "%s: the compiled build does not match %s; running the source (make compile builds it again)",
            package,
            ", ".join(found),
        )
        sys.meta_path.insert(0, _FromSource(package, directory))
    return found
