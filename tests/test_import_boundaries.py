"""The operator's import path carries no emulator: importing the handlers (each module of the package) and the
CLI that runs them loads neither kmock nor the emulated API server (paybill.kube) nor the CEL evaluator it
validates CRDs with; and the emulator's commands, without its optional extra, say how to install it. One
fresh interpreter per check: this one has the emulator loaded by the fixtures."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EMULATOR_PACKAGES = ("kmock", "paybill.kube", "cel")
OPERATOR_IMPORTS = """
import importlib, pkgutil
import paybill.cli, paybill.handlers, paybill.kubeclient
for module in pkgutil.iter_modules(paybill.handlers.__path__, "paybill.handlers."):
    importlib.import_module(module.name)
"""


def loaded_emulator_modules(imports: str) -> list[str]:
    """The emulator's modules a fresh interpreter holds after running ``imports``."""
    report = (
        f"\nimport sys\nprint('\\n'.join(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
        f"for p in {EMULATOR_PACKAGES!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", imports + report], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_the_operator_imports_no_emulator() -> None:
    assert loaded_emulator_modules(OPERATOR_IMPORTS) == []


def test_the_emulator_loads_what_the_check_looks_for() -> None:
    """The check above would pass vacuously if the names were wrong: the emulator does load them."""
    assert {"kmock", "paybill.kube.server", "cel"} <= set(loaded_emulator_modules("import paybill.kube"))


def run_without_the_emulator_extra(*argv: str) -> subprocess.CompletedProcess[str]:
    """`paybill ARGV` in an interpreter where kmock cannot be imported, as after a plain `pip install paybill`."""
    script = f"import sys; sys.modules['kmock'] = None; from paybill.cli import main; sys.exit(main({list(argv)!r}))"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)


def test_the_emulator_commands_say_how_to_install_the_extra(tmp_path: Path) -> None:
    for argv in (["emulator", "--kubeconfig", str(tmp_path / "kubeconfig")], ["demo", "--state-dir", str(tmp_path)]):
        result = run_without_the_emulator_extra(*argv)
        assert result.returncode != 0, argv
        assert "pip install 'paybill[emulator]'" in result.stderr, (argv, result.stderr)
        assert "Traceback" not in result.stderr, argv
    assert not (tmp_path / "kubeconfig").exists()
