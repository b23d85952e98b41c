"""The operator's import path carries no emulator: importing the handlers (each module of the package) and the
CLI that runs them loads neither kmock nor the emulated API server (paybill.kube) nor the CEL evaluator it
validates CRDs with; and the emulator's commands, without its optional extra, say how to install it. One
fresh interpreter per check: this one has the emulator loaded by the fixtures."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

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


PACKAGE = Path(__file__).resolve().parents[1] / "operator" / "paybill"


def imported_modules(package: str) -> set[str]:
    """Every module an import statement anywhere in ``paybill.<package>`` names (relative ones resolved), read from
    the source so an import inside a function counts too."""
    names = set()
    for path in (PACKAGE / package).rglob("*.py"):
        module = ".".join(("paybill", *path.relative_to(PACKAGE).with_suffix("").parts))
        here = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = here.rsplit(".", node.level - 1)[0] if node.level else ""
                target = ".".join(part for part in (base, node.module) if part)
                names.update({target} | {f"{target}.{alias.name}" for alias in node.names})
    return names


def within(names: set[str], package: str) -> set[str]:
    return {name for name in names if name == package or name.startswith(package + ".")}


@pytest.mark.parametrize(("package", "never"), [("database", "billing"), ("billing", "database")])
def test_database_and_billing_never_import_each_other(package: str, never: str) -> None:
    """Both read the shared value types (Access, TableChecksum, DatabasePlacement) from paybill.api."""
    assert within(imported_modules(package), f"paybill.{never}") == set()


def test_billing_is_below_lifecycle() -> None:
    """Billing is arithmetic over the api types; lifecycle's deciders use it, never the other way (no cycle)."""
    assert within(imported_modules("billing"), "paybill.lifecycle") == set()
    assert "paybill.billing.grace" in imported_modules("lifecycle")  # the check reads the imports it means to


def test_the_import_reader_resolves_relative_imports() -> None:
    """The check above would pass vacuously if relative imports were misread: database does import paybill.api."""
    assert "paybill.api.plan" in within(imported_modules("database"), "paybill.api")
    assert "paybill.database.ownership" in imported_modules("database")


DATABASE_PACKAGES = ("psycopg", "paybill.database")
ENGINE_IMPORTS = """
import importlib, pkgutil
import paybill.policy
for module in pkgutil.iter_modules(paybill.policy.__path__, "paybill.policy."):
    importlib.import_module(module.name)
"""


def loaded_database_modules(imports: str) -> list[str]:
    """psycopg's and paybill.database's modules a fresh interpreter holds after running ``imports``."""
    report = (
        f"\nimport sys\nprint('\\n'.join(m for m in sys.modules if any(m == p or m.startswith(p + '.') "
        f"for p in {DATABASE_PACKAGES!r})))"
    )
    result = subprocess.run(
        [sys.executable, "-c", imports + report], capture_output=True, text=True, timeout=60, check=True
    )
    return result.stdout.split()


def test_the_policy_engine_never_touches_a_database() -> None:
    """Every module of paybill.policy (analysis, rules, rewrite, decisions, validation, schema, check, engine) is
    the specification and its evaluator: none loads psycopg or the database side (paybill.database.agents)."""
    assert loaded_database_modules(ENGINE_IMPORTS) == []


def test_the_database_side_of_the_gate_loads_what_the_check_looks_for() -> None:
    """The check above would pass vacuously if the names were wrong: the guard does load them."""
    loaded = set(loaded_database_modules("import paybill.database.agents.guard"))
    assert {"psycopg", "paybill.database.agents.guard"} <= loaded
