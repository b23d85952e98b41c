"""`paybill --help` says what the product and each command do and every setting the code reads; the operator
logs name their object, expected waits are warnings, and `--log-format json` gives one JSON object per line."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import urllib.parse
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from paybill import logs
from paybill.cli import OPERATOR_ENVIRONMENT, TERRAFORM_JOB_ENVIRONMENT, build_parser

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "operator" / "paybill"
API = "paybill.dev/v1alpha1"


def variables_the_code_reads() -> set[str]:
    """Every PAYBILL_* name written as a string literal anywhere in the operator's source."""
    return {
        name
        for path in SOURCE.rglob("*.py")
        for name in re.findall(r"[\"'](PAYBILL_[A-Z0-9_]+)[\"']", path.read_text())
    }


def help_of(*argv: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "paybill", *argv, "--help"], capture_output=True, text=True, check=True
    ).stdout


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every (sub)command's parser and the help its parent lists it with."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            listed = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                yield (*path, name), (sub, listed.get(name))
                yield from commands(sub, (*path, name))


def test_help_opens_with_what_the_product_is() -> None:
    text = help_of()
    first = text.split("\n\n")[1].splitlines()[0]
    assert first.startswith("Paybill: a Kubernetes operator for multi-tenant SaaS"), first
    assert "The `paybill` command" not in text


def test_help_names_every_paybill_variable_the_code_reads() -> None:
    variables = variables_the_code_reads()
    assert {"PAYBILL_DATABASE_URL", "PAYBILL_STATE_DIR", "PAYBILL_BACKUP_DIR"} <= variables  # the scan works
    missing = sorted(name for name in variables if name not in help_of())
    assert not missing, f"`paybill --help` does not name {missing}"
    read_elsewhere = {name for name, _ in TERRAFORM_JOB_ENVIRONMENT}
    operator_help = help_of("operator")
    missing = sorted(name for name in variables - read_elsewhere if name not in operator_help)
    assert not missing, f"`paybill operator --help` does not name {missing}"
    assert {name for name, _ in OPERATOR_ENVIRONMENT} - {"KUBECONFIG"} <= variables  # nothing stale listed


def test_every_command_and_option_says_what_it_does() -> None:
    undocumented = []
    for path, (parser, listed) in commands(build_parser()):
        if not listed or not parser.description:
            undocumented.append(" ".join(path))
        for action in parser._actions:
            if action.option_strings and action.dest != "help" and (not action.help or action.help == "==SUPPRESS=="):
                undocumented.append(f"{' '.join(path)} {action.option_strings[0]}")
    assert not undocumented
    assert {" ".join(path) for path, _ in commands(build_parser())} >= {
        "crds",
        "emulator",
        "operator",
        "demo",
        "policy",
        "policy check",
    }


def record(message: str, level: int = logging.INFO, ref: dict[str, Any] | None = None) -> logging.LogRecord:
    entry = logging.LogRecord("kopf.objects", level, __file__, 1, message, None, None)
    if ref is not None:
        entry.k8s_ref = ref
    return entry


def test_text_lines_name_the_object_and_a_retried_wait_is_a_warning() -> None:
    tenant = {"apiVersion": API, "kind": "Tenant", "name": "acme", "uid": "u1", "namespace": None}
    policy = {"apiVersion": API, "kind": "AgentPolicy", "name": "support", "uid": "u2", "namespace": "tenant-acme"}
    text = logs.TextFormatter()
    assert "INFO kopf.objects: [Tenant acme] Handler 'reconcile_tenant' succeeded." in text.format(
        record("Handler 'reconcile_tenant' succeeded.", ref=tenant)
    )
    assert "[AgentPolicy tenant-acme/support] installed" in text.format(record("installed", ref=policy))
    waits = logs.ExpectedWaits()
    retried = record("Handler 'reconcile_tenant' failed temporarily: plan 'gold' does not exist", logging.ERROR, tenant)
    final = record("Handler 'x' failed temporarily but will exceed 3 retries: no", logging.ERROR, tenant)
    crashed = record("Handler 'x' failed with an exception. Will retry.", logging.ERROR, tenant)
    for entry in (retried, final, crashed):
        waits.filter(entry)
    assert [retried.levelname, final.levelname, crashed.levelname] == ["WARNING", "ERROR", "ERROR"]


def test_a_wait_retried_again_and_again_is_said_once_per_quiet_period() -> None:
    """A workflow awaiting approval is looked at every few seconds for hours: one WARNING line (and Event, which kopf
    posts from INFO up) per object and message per quiet period, the repeats at DEBUG."""
    workflow = {"kind": "AgentWorkflow", "name": "refund", "namespace": "tenant-acme", "uid": "u3"}
    other = {**workflow, "name": "refund-2", "uid": "u4"}
    now = [1000.0]
    waits = logs.ExpectedWaits(quiet=300, clock=lambda: now[0])
    objects = logging.getLogger("kopf.objects")
    previous = objects.level
    objects.setLevel(logging.INFO)
    try:
        _repeats_are_quiet(waits, now, workflow, other)
    finally:
        objects.setLevel(previous)


def _repeats_are_quiet(
    waits: logs.ExpectedWaits, now: list[float], workflow: dict[str, Any], other: dict[str, Any]
) -> None:
    def level(message: str, ref: dict[str, Any]) -> str:
        entry = record(f"Handler 'run_workflow' failed temporarily: {message}", logging.ERROR, ref)
        kept = waits.filter(entry)
        assert kept == (entry.levelname == "WARNING")  # a DEBUG line is dropped while the logger is at INFO
        return entry.levelname

    awaiting = "step refund needs approval: approve plan hash 3f2a"
    assert level(awaiting, workflow) == "WARNING"
    now[0] += 3
    assert level(awaiting, workflow) == "DEBUG"
    assert level(awaiting, other) == "WARNING"  # another object
    assert level("step refund was rejected", workflow) == "WARNING"  # another message
    now[0] += 296  # 299 s after the line said: still quiet, however many repeats came between
    assert level(awaiting, workflow) == "DEBUG"
    now[0] += 2
    assert level(awaiting, workflow) == "WARNING"
    crashed = record("Handler 'x' failed with an exception. Will retry.", logging.ERROR, workflow)
    for _ in range(2):
        waits.filter(crashed)
        assert crashed.levelname == "ERROR"  # only retried waits are quieted


@pytest.mark.slow
def test_the_operator_logs_json_lines_naming_objects_and_a_wait_for_a_plan_as_a_warning(
    cluster: Any, postgres: Any, tmp_path: Path
) -> None:
    log = tmp_path / "operator.log"
    env = {
        **os.environ,
        "KUBECONFIG": str(cluster.kubeconfig),
        "PAYBILL_DATABASE_URL": postgres.dsn,
        "PAYBILL_STATE_DIR": str(tmp_path / "state"),
    }
    argv = [
        sys.executable,
        "-m",
        "paybill",
        "operator",
        "--log-format",
        "json",
        "--liveness",
        "http://127.0.0.1:0/healthz",
    ]  # port 0: a free port, never kopf's fallback to 80
    with port_80_taken(), log.open("wb") as out:
        operator = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            cluster.kube.apply(
                yaml.safe_load(f"""{{apiVersion: {API}, kind: Tenant, metadata: {{name: waits}},
                                                   spec: {{displayName: Waits, planRef: gold}}}}""")
            )

            def waited() -> bool:
                return any("plan 'gold' does not exist" in line["message"] for line in lines(log)[0])

            cluster.eventually(waited, timeout=60)
            url = next(e["message"].split(" at ")[1] for e in lines(log)[0] if "liveness endpoint" in e["message"])
            assert urllib.parse.urlsplit(url).port not in (0, 80, None)
            with urllib.request.urlopen(url, timeout=10) as answer:
                assert answer.status == 200
        finally:
            operator.terminate()
            operator.wait(timeout=30)
    assert operator.returncode == 0, log.read_text()[-2000:]
    records, unparsed = lines(log)
    assert not unparsed, unparsed[:3]
    assert all(set(entry) >= {"time", "level", "logger", "message", "object"} for entry in records)
    wait = [entry for entry in records if "plan 'gold' does not exist" in entry["message"]]
    assert all(entry["level"] == "WARNING" for entry in wait), wait
    assert all(entry["object"] == {"kind": "Tenant", "name": "waits"} for entry in wait), wait
    assert not [entry for entry in records if entry["level"] == "ERROR"]
    about_objects = [entry for entry in records if entry["logger"] == "kopf.objects"]
    assert about_objects and all(entry["object"] and entry["object"].get("kind") for entry in about_objects)
    assert not [e for e in cluster.kube.list("v1", "events") if e.get("type") not in ("Normal", "Warning")]


@contextlib.contextmanager
def port_80_taken() -> Iterator[None]:
    with socket.socket() as holder:
        try:
            holder.bind(("127.0.0.1", 80))
            holder.listen()
        except OSError as error:  # not root, or already taken: the operator must not need it either way
            warnings.warn(f"port 80 not taken by the test ({error})", stacklevel=1)
        yield


def lines(log: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """The log's JSON records, and any line that is not one."""
    records, unparsed = [], []
    for line in log.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            unparsed.append(line)
    return records, unparsed


def test_the_operator_without_cluster_credentials_exits_at_once_saying_what_to_set(tmp_path: Path) -> None:
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "missing")}
    env.pop("KUBERNETES_SERVICE_HOST", None)
    run = subprocess.run(
        [sys.executable, "-m", "paybill", "operator"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "set KUBECONFIG" in run.stderr and "Traceback" not in run.stderr
