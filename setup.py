"""Paybill's build (metadata in pyproject.toml): the policy engine's hot modules are compiled with mypyc.

The modules in `paybill/policy/compiled.py`'s COMPILED are compiled from their own source, the source mypy
checks and the tests import; each source's digest goes to `compiled.json` beside them, so a module edited after
the build runs from its source until it is built again (`make compile`). PAYBILL_PURE_PYTHON=1 builds without a
C compiler: the same engine, pure Python, slower.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

from setuptools import setup

POLICY = Path("operator/paybill/policy")
# The commands that build extension modules. pip first asks for requirements and metadata (egg_info, dist_info),
# which need none: compiling only here spares an install two runs of mypy and mypyc's code generation (~20 s each).
BUILDS = frozenset({"build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist", "bdist_egg"})


def _compiled_list() -> tuple[str, ...]:
    spec = importlib.util.spec_from_file_location("_paybill_compiled", POLICY / "compiled.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(module.COMPILED)


def _extensions() -> list[object]:
    if not BUILDS.intersection(sys.argv[1:]):
        return []
    manifest = POLICY / "compiled.json"
    manifest.unlink(missing_ok=True)
    if os.environ.get("PAYBILL_PURE_PYTHON"):
        return []
    from mypyc.build import mypycify

    names = _compiled_list()
    sources = [POLICY / f"{name}.py" for name in names]
    extensions = mypycify([str(s) for s in sources], opt_level="3", group_name="paybill_policy")
    digests = {name: hashlib.sha256(s.read_bytes()).hexdigest() for name, s in zip(names, sources, strict=True)}
    manifest.write_text(json.dumps(digests))
    return extensions


setup(ext_modules=_extensions())
