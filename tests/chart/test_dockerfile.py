"""The Dockerfile, linted here (this machine has no container builder and cannot pull a base image; `make
docker-build` builds it where one is): multi-stage, every base pinned by digest, a non-root user the chart runs as,
no secret baked in, the PostgreSQL client tools and Terraform in the runtime stage, and a build context
(.dockerignore) that holds what the image needs and nothing else. The chart's default image is the one it builds."""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from .helm_tool import REPO

DOCKERFILE = REPO / "Dockerfile"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
SECRET_NAME = re.compile(
    r"(PASSWORD|PASSWD|SECRET|TOKEN|PRIVATE_KEY|API_KEY|ACCESS_KEY|CREDENTIAL|DATABASE_URL|DSN)", re.I
)
SECRET_FILES = (
    "*.pem",
    "*.key",
    "kubeconfig",
    "*.kubeconfig",
    ".env",
    "*.env",
    "*.tfstate",
    "credentials",
    "credentials.json",
    "id_rsa*",
    "*.p12",
)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str


def instructions(text: str) -> list[Instruction]:
    """Dockerfile instructions, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    found = []
    for line in joined.splitlines():
        if line.strip():
            keyword, _, arguments = line.strip().partition(" ")
            found.append(Instruction(keyword.upper(), arguments.strip()))
    return found


def stages(parsed: list[Instruction]) -> list[list[Instruction]]:
    result: list[list[Instruction]] = []
    for instruction in parsed:
        if instruction.keyword == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def build_args(parsed: list[Instruction]) -> dict[str, str]:
    args = {}
    for instruction in parsed:
        if instruction.keyword == "ARG" and "=" in instruction.arguments:
            name, _, value = instruction.arguments.partition("=")
            args[name] = value
    return args


def base_image(from_arguments: str, args: dict[str, str], stage_names: set[str]) -> str | None:
    """The image a FROM pulls (ARGs expanded), or None when it starts from an earlier stage."""
    image = from_arguments.split()[0]
    image = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m.group(1) or m.group(2)], image)
    return None if image in stage_names else image


def test_every_base_is_pinned_by_digest_and_the_build_is_multi_stage() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    args = build_args(parsed)
    names: set[str] = set()
    pulled = []
    for stage in stages(parsed):
        words = stage[0].arguments.split()
        image = base_image(stage[0].arguments, args, names)
        if image is not None:
            pulled.append(image)
        if len(words) == 3 and words[1].upper() == "AS":
            names.add(words[2])
    assert len(stages(parsed)) >= 2, "multi-stage: the build tools stay out of the runtime image"
    assert pulled and all(DIGEST.search(image) for image in pulled), pulled


def test_the_runtime_runs_as_the_non_root_user_the_chart_names() -> None:
    parsed = instructions(DOCKERFILE.read_text())
    runtime = stages(parsed)[-1]
    users = [i.arguments for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage sets USER"
    user, _, group = users[-1].partition(":")
    assert user.isdigit() and int(user) > 0 and (not group or int(group) > 0), "a numeric, non-root USER"
    after_user = runtime[[i.keyword for i in runtime].index("USER") :]
    assert not [i for i in after_user if i.keyword == "USER" and i.arguments.split(":")[0] in ("0", "root")]
    values = yaml.safe_load((REPO / "charts" / "paybill" / "values.yaml").read_text())
    assert values["podSecurityContext"]["runAsUser"] == int(user)
    assert values["podSecurityContext"]["runAsGroup"] == int(group or user)
    entrypoint = json.loads(next(i.arguments for i in runtime if i.keyword == "ENTRYPOINT"))
    assert entrypoint == ["paybill"], "the chart passes `operator ...` as args"


def test_the_runtime_has_the_postgresql_client_tools_and_terraform() -> None:
    runtime = stages(instructions(DOCKERFILE.read_text()))[-1]
    text = " ".join(i.arguments for i in runtime)
    assert re.search(r"apt-get install .*postgresql-client", text), "pg_dump for final backups"
    assert any(i.keyword == "COPY" and "--from=terraform" in i.arguments for i in runtime)
    checks = [i.arguments for i in runtime if i.keyword == "RUN" and "pg_dump --version" in i.arguments]
    assert checks and "terraform version" in checks[0], "the build fails if either is missing"


def test_no_secret_is_baked_into_the_image() -> None:
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"(\w+)=", instruction.arguments) or [instruction.arguments.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], instruction
        if instruction.keyword in ("COPY", "ADD"):
            assert instruction.keyword == "COPY", "ADD fetches URLs and unpacks archives: COPY only"
            sources = [w for w in shlex.split(instruction.arguments) if not w.startswith("--")][:-1]
            assert not [s for s in sources for p in SECRET_FILES if fnmatch.fnmatch(Path(s).name, p)], instruction


def dockerignore_patterns() -> list[tuple[bool, str]]:
    """(exclude?, pattern) in order, as Docker reads .dockerignore (the last matching pattern wins)."""
    patterns = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        patterns.append((not negated, os.path.normpath(line.lstrip("!")).lstrip("/")))
    return patterns


def excluded(path: str, patterns: list[tuple[bool, str]]) -> bool:
    """Whether Docker leaves `path` (relative, with /) out of the context: a pattern matches a path or a parent."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    result = False
    for exclude, pattern in patterns:
        if any(
            fnmatch.fnmatchcase(c, pattern) or fnmatch.fnmatchcase(c, pattern.replace("**/", "")) for c in candidates
        ):
            result = exclude
    return result


def build_context() -> list[str]:
    """Every file Docker would send from this checkout (the working tree, as `docker build .` reads it)."""
    patterns = dockerignore_patterns()
    sent = []
    for root, directories, files in os.walk(REPO):
        relative = Path(root).relative_to(REPO).as_posix()
        prefix = "" if relative == "." else relative + "/"
        # a directory no negation can reach back into is not walked (.git, .venv, .state)
        directories[:] = [
            d
            for d in directories
            if not excluded(prefix + d, patterns) or any(not e for e, _ in patterns if _.startswith(prefix + d))
        ]
        sent += [prefix + f for f in files if not excluded(prefix + f, patterns)]
    return sorted(sent)


def test_the_build_context_holds_what_the_image_needs_and_nothing_else() -> None:
    context = build_context()
    patterns = dockerignore_patterns()
    # what the Dockerfile copies from the context is there
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "COPY" and "--from=" not in instruction.arguments:
            for source in shlex.split(instruction.arguments)[:-1]:
                source = source.rstrip("/")
                assert source in context or any(f.startswith(source + "/") for f in context), f"{source} not sent"
    # the package: every module and the Terraform modules it ships (pyproject package-data)
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"]["find"]["where"] == ["operator"]
    tracked = [p.relative_to(REPO).as_posix() for p in (REPO / "operator" / "paybill").rglob("*") if p.is_file()]
    wanted = [p for p in tracked if p.endswith((".py", ".tf", "py.typed")) and "__pycache__" not in p]
    assert wanted and not [p for p in wanted if p not in context], "a module the package needs is not sent"
    # and nothing else: no tests, charts, state, virtual environments, git, caches or secrets
    for path in (
        ".git/HEAD",
        ".venv/bin/python",
        ".state/kubeconfig",
        "tests/conftest.py",
        "charts/paybill/values.yaml",
        "bench/__init__.py",
        "operator/paybill/__pycache__/cli.cpython-311.pyc",
        ".env",
        "kubeconfig",
        "operator/paybill/terraform/modules/aws/silo/terraform.tfstate",
        "operator/paybill/terraform/modules/aws/silo/.terraform/x",
    ):
        assert excluded(path, patterns), f"{path} would be sent"
    assert not [
        f
        for f in context
        if not f.startswith("operator/") and f not in ("pyproject.toml", "setup.py", "constraints.txt", "README.md")
    ]
    assert not [f for f in context for p in SECRET_FILES if fnmatch.fnmatch(Path(f).name, p)]


def test_the_charts_default_image_is_the_one_this_dockerfile_builds() -> None:
    chart = yaml.safe_load((REPO / "charts" / "paybill" / "Chart.yaml").read_text())
    values = yaml.safe_load((REPO / "charts" / "paybill" / "values.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"], "the image's tag (appVersion) is the package's version"
    assert values["image"]["tag"] == "" and values["image"]["digest"] == "", "the default image is appVersion's"
    labels = " ".join(i.arguments for i in instructions(DOCKERFILE.read_text()) if i.keyword == "LABEL")
    assert f'org.opencontainers.image.version="{project["version"]}"' in labels
    makefile = (REPO / "Makefile").read_text()
    assert (
        f"IMAGE ?= {values['image']['repository']}:$(shell sed" in makefile and "docker build -t $(IMAGE) ." in makefile
    )


def test_the_build_stage_compiles_the_policy_engine_and_the_runtime_has_no_compiler() -> None:
    """setup.py compiles the engine's hot modules (mypyc): the build stage has setup.py and gcc, checks the install
    built every listed module from its source, and the runtime stage installs no compiler."""
    parsed = stages(instructions(DOCKERFILE.read_text()))
    build, runtime = next(s for s in parsed if s[0].arguments.split()[-1] == "build"), parsed[-1]
    copied = [w for i in build if i.keyword == "COPY" for w in shlex.split(i.arguments)[:-1]]
    assert "setup.py" in copied and "operator/" in copied
    build_runs = " ".join(i.arguments for i in build if i.keyword == "RUN")
    assert re.search(r"apt-get install .*\bgcc\b.*\blibc6-dev\b", build_runs)
    assert "c.built() == list(c.COMPILED) and not c.stale()" in build_runs, "the build fails if nothing was compiled"
    runtime_runs = " ".join(i.arguments for i in runtime if i.keyword == "RUN")
    assert not re.search(r"\b(gcc|libc6-dev|build-essential|clang)\b", runtime_runs)
