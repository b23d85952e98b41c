"""The operator's import path carries no emulator: importing the handlers (each module of the package) and the
CLI that runs them loads neither kmock nor the emulated API server (paybill.kube) nor the CEL evaluator it
validates CRDs with. One fresh interpreter per check: this one has the emulator loaded by the fixtures."""

from __future__ import annotations

import subprocess
import sys

EMULATOR_PACKAGES = ("kmock", "paybill.kube", "cel")
OPERATOR_IMPORTS = """
import importlib, pkgutil
import paybill.cli, paybill.handlers, paybill.kubeclient
for module in pkgutil.iter_modules(paybill.handlers.__path__, "paybill.handlers."):
    importlib.import_module(module.name)
"""


def loaded_emulator_modules(imports: str) -> list[str]:
    """The emulator's modules a fresh interpreter holds after running ``imports``."""
    report = (f"\nimport sys\nprint('\\n'.join(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
              f"for p in {EMULATOR_PACKAGES!r})))")
    result = subprocess.run([sys.executable, "-c", imports + report], capture_output=True, text=True, timeout=60,
                            check=True)
    return result.stdout.split()


def test_the_operator_imports_no_emulator() -> None:
    assert loaded_emulator_modules(OPERATOR_IMPORTS) == []


def test_the_emulator_loads_what_the_check_looks_for() -> None:
    """The check above would pass vacuously if the names were wrong: the emulator does load them."""
    assert {"kmock", "paybill.kube.server", "cel"} <= set(loaded_emulator_modules("import paybill.kube"))
