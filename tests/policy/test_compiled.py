"""The engine's compiled build (setup.py, mypyc): what the tests import is what the install compiled, never stale."""

from __future__ import annotations

import importlib
import importlib.machinery
import os
import shutil
import subprocess
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
    for name in compiled.COMPILED + compiled.NATIVE:  # the C modules too: the install downloads their sources
        module = importlib.import_module(f"paybill.policy.{name}")
        assert str(module.__file__).endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)), module.__file__


def test_a_c_module_the_build_did_not_record_is_stale(package: Path) -> None:
    """Outsider's finding: a build that skipped the C modules (no pglast sdist) left an older treedicts binary in
    place, unrecorded, and it ran. An unrecorded C module is stale like any binary, even with no mypyc module."""
    _record(package)
    native = package / f"treedicts{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    native.write_bytes(b"an older build")
    assert compiled.stale(package) == [native.name]
    (package / f"tree{importlib.machinery.EXTENSION_SUFFIXES[0]}").unlink()
    compiled.record(package, [])
    assert compiled.stale(package) == [native.name]


def test_a_stale_build_hides_the_c_modules(package: Path) -> None:
    """A C module has no source to fall back on: under a stale build its import fails, so its callers take their
    pure-Python path (treedicts' callers read libpg_query's JSON) rather than run a binary nothing vouches for."""
    (package / f"treedicts{importlib.machinery.EXTENSION_SUFFIXES[0]}").write_bytes(b"not a shared object")
    assert compiled.guard(PACKAGE, package) == [compiled.MANIFEST]
    with pytest.raises(ModuleNotFoundError, match="not current"):
        importlib.import_module(f"{PACKAGE}.treedicts")


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


def _record(package: Path) -> None:
    compiled.record(package, [package / f"tree{importlib.machinery.EXTENSION_SUFFIXES[0]}"])


def test_a_module_edited_after_the_build_runs_from_its_source(package: Path) -> None:
    _record(package)
    (package / "tree.py").write_text("RUNS = 'source'  # edited\n")
    assert compiled.stale(package) == ["tree.py"]
    assert compiled.guard(PACKAGE, package) == ["tree.py"]
    assert importlib.import_module(f"{PACKAGE}.tree").RUNS == "source"


def test_a_build_without_its_record_is_stale_and_a_current_one_is_not(package: Path) -> None:
    assert compiled.stale(package) == [compiled.MANIFEST]  # nothing says what it was built from
    _record(package)
    assert compiled.stale(package) == []
    assert compiled.guard(PACKAGE, package) == []
    with pytest.raises(ImportError):  # the extension module is what Python imports when it is current
        importlib.import_module(f"{PACKAGE}.tree")


def test_a_binary_replaced_after_the_build_or_never_recorded_is_stale(package: Path) -> None:
    binary = package / f"tree{importlib.machinery.EXTENSION_SUFFIXES[0]}"
    _record(package)
    binary.write_bytes(b"another shared object")
    assert compiled.stale(package) == [binary.name]
    compiled.record(package, [])
    assert compiled.stale(package) == [binary.name]


def test_an_imported_module_of_the_package_is_a_build_input(package: Path) -> None:
    """mypyc may fold an imported constant into the binary: editing the imported module makes the build stale."""
    (package / "rules.py").write_text("LIMIT = 1\n")
    (package / "tree.py").write_text("from .rules import LIMIT\nRUNS = 'source'\n")
    assert compiled.build_inputs(package) == ["rules.py", "tree.py"]
    _record(package)
    (package / "rules.py").write_text("LIMIT = 2\n")
    assert compiled.stale(package) == ["rules.py"]


def test_the_build_script_and_the_pinned_versions_are_build_inputs() -> None:
    """Outsider's finding: setup.py decides what the C modules hold (the field numbers it generates, the include
    paths, the pglast version they accept) and constraints.txt pins the pglast whose sources they are built from;
    an edit to either left the old binaries running."""
    assert {"../../../setup.py", "../../../constraints.txt"} <= set(compiled.build_inputs())


def test_a_shipped_build_records_the_engine_and_what_it_imports() -> None:
    inputs = compiled.build_inputs()
    assert {f"{name}.py" for name in compiled.COMPILED} <= set(inputs)
    assert {"rules.py", "schema.py", "decision.py", "../api/agentpolicy.py"} <= set(inputs)


@pytest.mark.slow
def test_a_build_that_fails_after_an_edit_leaves_the_old_binaries_untrusted(tmp_path: Path) -> None:
    """setup.py records a build only once the compiler succeeded: the binaries of the previous build, left in place
    by a build that failed (here: at the C compiler), are never taken for the edited source."""
    if not compiled.built():
        pytest.skip("a pure-Python install (PAYBILL_PURE_PYTHON=1): nothing is compiled")
    root = Path(__file__).resolve().parents[2]
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "operator", tmp_path / "operator", ignore=shutil.ignore_patterns("__pycache__"))
    if (root / ".mypy_cache").is_dir():  # the install's type-check cache: mypyc re-checks only what changed
        shutil.copytree(root / ".mypy_cache", tmp_path / ".mypy_cache")
    policy = tmp_path / "operator" / "paybill" / "policy"
    assert (policy / compiled.MANIFEST).is_file()  # the copy carries the current build's record
    (policy / "rules.py").write_text((policy / "rules.py").read_text() + "\nEDITED = True\n")
    build = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
        cwd=tmp_path,
        env={**os.environ, "CC": "false", "LDSHARED": "false"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode != 0, build.stdout + build.stderr
    assert compiled.built(policy) == list(compiled.COMPILED)  # the old binaries are still there...
    assert compiled.stale(policy) == [compiled.MANIFEST]  # ...and nothing vouches for them


@pytest.mark.slow
def test_a_c_module_that_does_not_compile_leaves_the_build_whole_and_none_of_its_binaries(tmp_path: Path) -> None:
    """The C tree readers are optional (a platform without pthread_getattr_np or ELF thread-locals): one that fails
    to compile leaves the mypyc build and its record whole, and no binary of its own, an older one included, for
    the engine to take; its callers use pglast's own paths."""
    if not compiled.built() or not compiled.built(compiled.HERE, compiled.NATIVE):
        pytest.skip("the C modules were not built here")
    root = Path(__file__).resolve().parents[2]
    for name in ("setup.py", "pyproject.toml", "README.md", "constraints.txt"):
        shutil.copy(root / name, tmp_path / name)
    shutil.copytree(root / "operator", tmp_path / "operator", ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "build" / "pglast-sdist").mkdir(parents=True)
    for sdist in (root / "build" / "pglast-sdist").glob("*.tar.gz"):
        shutil.copy(sdist, tmp_path / "build" / "pglast-sdist" / sdist.name)
    if (root / ".mypy_cache").is_dir():
        shutil.copytree(root / ".mypy_cache", tmp_path / ".mypy_cache")
    policy = tmp_path / "operator" / "paybill" / "policy"
    assert compiled.built(policy, compiled.NATIVE) == list(compiled.NATIVE)  # the copy carries the older binaries
    (policy / "treedicts.c").write_text("#error this platform cannot build it\n")
    build = subprocess.run(
        [sys.executable, "setup.py", "--quiet", "build_ext", "--inplace"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert compiled.built(policy, compiled.NATIVE) == ["treeprotobuf"]
    assert compiled.built(policy) == list(compiled.COMPILED)
    # every recorded file matches (this process imported its mypyc library from the checkout, not from the copy)
    assert [found for found in compiled.stale(policy) if not found.startswith("paybill_policy__mypyc (")] == []


def test_a_shared_library_of_the_same_name_earlier_on_sys_path_is_not_taken_for_the_build(
    package: Path, tmp_path: Path
) -> None:
    """Outsider's finding: mypyc's shared library is a top-level module the compiled modules import by name, so a
    library of that name in the current directory or on PYTHONPATH ran as the recorded build (a tampered engine
    admitted a hidden column) with no warning."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    group = tmp_path / f"paybill_probe_group{suffix}"  # beside the package, as in site-packages
    group.write_bytes(b"the build's shared library")
    compiled.record(package, [package / f"tree{suffix}", group])
    assert compiled.stale(package) == []
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    (elsewhere / group.name).write_bytes(b"another build's shared library")
    sys.path.insert(0, str(elsewhere))
    try:
        assert compiled.stale(package) == [f"paybill_probe_group (imported from {elsewhere / group.name})"]
    finally:
        sys.path.remove(str(elsewhere))
