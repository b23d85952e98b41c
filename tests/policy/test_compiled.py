"""The engine's compiled build (setup.py, mypyc): what the tests import is what the install compiled, never stale."""

from __future__ import annotations

import importlib
import importlib.machinery
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from paybill.policy import compiled

PACKAGE = "paybill_compiled_probe"


def test_the_tests_run_the_compiled_engine_the_install_built() -> None:
    """Where the install compiled the engine, every compiled module the tests import is the extension module built
    from the source as it is now (so the suite runs against what ships, and a stale build is noticed here)."""
    if not compiled.built() and not (compiled.HERE / compiled.MANIFEST).exists():
        pytest.skip("a pure-Python install (PAYBILL_PURE_PYTHON=1): nothing is compiled")
    assert compiled.stale() == [], "compiled from an older source: run make compile"
    for name in compiled.COMPILED:
        module = importlib.import_module(f"paybill.policy.{name}")
        assert str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__


@pytest.fixture
def package(tmp_path: Path) -> Iterator[Path]:
    """A package holding one compiled module's source and, beside it, an extension module that fails to load."""
    directory = tmp_path / PACKAGE
    directory.mkdir()
    (directory / "__init__.py").write_text("")
    (directory / "tree.py").write_text("RUNS = 'source'\n")
    (directory / f"tree{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"not a shared object")
    sys.path.insert(0, str(tmp_path))
    yield directory
    sys.path.remove(str(tmp_path))
    sys.meta_path[:] = [f for f in sys.meta_path if PACKAGE not in str(getattr(f, "sources", ""))]
    for name in [n for n in sys.modules if n.startswith(PACKAGE)]:
        del sys.modules[name]


def test_a_module_edited_after_the_build_runs_from_its_source(package: Path) -> None:
    (package / compiled.MANIFEST).write_text(json.dumps({"tree": "the digest of an older source"}))
    assert compiled.stale(package) == ["tree"]
    assert compiled.guard(PACKAGE, package) == ["tree"]
    assert importlib.import_module(f"{PACKAGE}.tree").RUNS == "source"


def test_a_build_without_its_record_is_stale_and_a_current_one_is_not(package: Path) -> None:
    assert compiled.stale(package) == ["tree"]  # no compiled.json: nothing says what it was built from
    (package / compiled.MANIFEST).write_text(json.dumps({"tree": compiled.digest(package / "tree.py")}))
    assert compiled.stale(package) == []
    assert compiled.guard(PACKAGE, package) == []
    with pytest.raises(ImportError):  # the extension module is what Python imports when it is current
        importlib.import_module(f"{PACKAGE}.tree")
