"""Paybill's build (metadata in pyproject.toml): the policy engine's hot modules are compiled with mypyc.

The modules in `paybill/policy/compiled.py`'s COMPILED are compiled from their own source, the source mypy
checks and the tests import. Only once the compiler succeeded does `compiled.json` record, beside them, the digest
of every source the build read and every binary it produced (in place and in the build directory a wheel is made
from): a module edited after the build, or a build that failed half way, runs from its source until it is built
again (`make compile`). PAYBILL_PURE_PYTHON=1 builds without a C compiler: the same engine, pure Python, slower.

Two modules are C of our own, `paybill/policy/treedicts.c` and `treeprotobuf.c`: they compile libpg_query's generated
tree walk from the pglast sdist of the pinned version (constraints.txt; `make install` downloads it into
build/pglast-sdist). Without that sdist they are left out, and the engine takes pglast's own serializations instead
(the same trees, slower).
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tarfile
from pathlib import Path
from types import ModuleType

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

POLICY = Path("operator/paybill/policy")
# The commands that build extension modules. pip first asks for requirements and metadata (egg_info, dist_info),
# which need none: compiling only here spares an install two runs of mypy and mypyc's code generation (~20 s each).
BUILDS = frozenset({"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist", "bdist_egg"})


def _compiled() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_paybill_compiled", POLICY / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class RecordedBuildExt(build_ext):
    """build_ext that writes the build record after the extension modules are built, never before."""

    def run(self) -> None:
        compiled = _compiled()
        inplace = self.inplace
        for ext in self.extensions:  # an optional module that fails to build must leave no older binary behind
            if ext.optional:
                for self.inplace in (True, False):
                    Path(self.get_ext_fullpath(ext.name)).unlink(missing_ok=True)
        self.inplace = inplace
        super().run()  # a compiler error ends the build here: no record, so the old binaries are not trusted
        outputs = [p for p in (Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions) if p.is_file()]
        self.inplace = False
        built = [p for p in (Path(self.get_ext_fullpath(ext.name)) for ext in self.extensions) if p.is_file()]
        self.inplace = inplace
        staged = Path(self.build_lib) / "paybill" / "policy"
        if all((staged / f"{name}.py").is_file() for name in compiled.COMPILED):  # build_py ran: a wheel's tree
            compiled.record(staged, built)
        if inplace:
            compiled.record(POLICY, outputs)


SDISTS = Path("build/pglast-sdist")


def _tree_readers() -> list[Extension]:
    """The C tree readers, built against the libpg_query sources of the pglast version constraints.txt pins."""
    pinned = re.search(r"^pglast==(\S+)$", Path("constraints.txt").read_text(), re.MULTILINE)
    sdist = SDISTS / f"pglast-{pinned.group(1)}.tar.gz" if pinned else None
    if sdist is None or not sdist.is_file():
        print(f"setup.py: no {sdist or 'pglast pin'}: the C tree readers are not built (make install downloads it)")
        for name in _compiled().NATIVE:  # an older build's binaries would otherwise stay, unrecorded
            for binary in POLICY.glob(f"{name}.*.so"):
                binary.unlink()
        return []
    sources = SDISTS / sdist.name.removesuffix(".tar.gz")
    if not sources.is_dir():
        with tarfile.open(sdist) as archive:
            archive.extractall(SDISTS, filter="data")
    library = sources / "libpg_query"
    generated = sources / "generated"
    generated.mkdir(exist_ok=True)
    numbers = _field_numbers(library / "protobuf" / "pg_query.proto")
    header = generated / "pg_query_field_numbers.h"
    if not header.is_file() or header.read_text() != numbers:
        header.write_text(numbers)
    return [
        Extension(
            f"paybill.policy.{name}",
            [str(POLICY / f"{name}.c")],
            depends=[str(POLICY / "pglast_parser.h"), str(generated / "pg_query_field_numbers.h")],
            include_dirs=[
                str(p)
                for p in (
                    library,
                    library / "src",
                    library / "src" / "include",
                    library / "src" / "postgres" / "include",
                    library / "vendor",
                    generated,
                )
            ],
            define_macros=[("PGLAST_VERSION", f'"v{pinned.group(1)}"')],  # type: ignore[union-attr]
            extra_compile_args=["-O2", "-fvisibility=hidden", "-Wno-unused-function"],
            optional=True,  # where it cannot be compiled (not Linux), the engine takes pglast's own paths
        )
        for name in ("treedicts", "treeprotobuf")
    ]


def _field_numbers(proto: Path) -> str:
    """`#define FIELD_<Message>_<field> <number>` for every field of pg_query.proto (treeprotobuf.c writes them)."""
    lines = ["/* The field numbers of libpg_query's pg_query.proto, written by setup.py. */"]
    message = None
    for line in proto.read_text().splitlines():
        opened = re.match(r"\s*message\s+(\w+)", line)
        if opened:
            message = opened.group(1)
            continue
        field = re.match(r"\s*(?:repeated\s+)?[\w.]+\s+(\w+)\s*=\s*(\d+)", line)
        if field and message:
            lines.append(f"#define FIELD_{message}_{field.group(1)} {field.group(2)}")
    lines.append("#define FIELD_Node_float_ FIELD_Node_float /* the outfuncs name the oneof member float_ */")
    return "\n".join(lines) + "\n"


def _extensions() -> list[object]:
    if not BUILDS.intersection(sys.argv[1:]):
        return []
    (POLICY / "compiled.json").unlink(missing_ok=True)  # until this build succeeds, no binary is trusted
    if os.environ.get("PAYBILL_PURE_PYTHON"):
        return []
    from mypyc.build import mypycify

    sources = [str(POLICY / f"{name}.py") for name in _compiled().COMPILED]
    return list(mypycify(sources, opt_level="3", group_name="paybill_policy")) + _tree_readers()


setup(ext_modules=_extensions(), cmdclass={"build_ext": RecordedBuildExt})
