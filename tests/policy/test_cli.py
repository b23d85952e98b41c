"""`paybill policy check`: the JSONL contract other tools script against."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import HERE, PolicyDatabase, load_cases


def check(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "paybill", "policy", "check", "--policy", str(HERE / "support-policy.yaml"), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_adversarial_corpus_through_the_cli_is_all_denied_in_order() -> None:
    result = check("--schema", str(HERE / "schema.sql"), "--tenant", "acme", "--input", str(HERE / "adversarial.jsonl"))
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    cases = load_cases("adversarial.jsonl")
    assert [d["id"] for d in decisions] == [c["id"] for c in cases]
    assert {d["decision"] for d in decisions} == {"deny"}
    assert all(d["sql"] is None and d["reasons"] for d in decisions)


def test_legitimate_statements_through_the_cli_are_allowed_with_rewritten_sql() -> None:
    result = check("--schema", str(HERE / "schema.sql"), "--tenant", "acme", "--input", str(HERE / "legitimate.jsonl"))
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(decisions) == len(load_cases("legitimate.jsonl"))
    assert all(d["decision"] == "allow" and "tenant_id = 'acme'" in d["sql"] for d in decisions)


def test_malformed_lines_are_denied_never_a_crash() -> None:
    lines = [
        '{"id": 1, "principal": "agent:support-bot", "sql": "SELECT id FROM orders"}',
        "not json",
        "[1, 2]",
        '{"id": 4, "principal": "agent:support-bot"}',
        '{"id": 5, "principal": 1, "sql": "SELECT 1"}',
        '{"id": 6, "principal": "agent:support-bot", "sql": "SELECT id FROM orders", "params": "x"}',
        "",
        '{"id": 7, "principal": "agent:support-bot", "sql": "SELECT \'\\u0000\'"}',
        '{"id": 8, "params": ' + "[" * 990 + "]" * 990 + "}",  # eleventh outside review: RecursionError lost the rest
        '{"id": 9, "principal": "agent:support-bot", "sql": "SELECT id FROM orders WHERE id = ANY($1)", "params": '
        + "["
        + "[" * 300
        + "]" * 300
        + "]}",
    ]
    result = check("--schema", str(HERE / "schema.sql"), "--input", "-", stdin="\n".join(lines) + "\n")
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["decision"] for d in decisions] == ["allow"] + ["deny"] * 8
    assert [d["id"] for d in decisions] == [1, None, None, 4, 5, 6, 7, None, 9]
    assert decisions[7]["reasons"][0]["code"] == "malformed_input"
    assert decisions[8]["reasons"][0]["code"] == "param_type", decisions[8]
    assert decisions[1]["reasons"][0]["code"] == "malformed_input"


def test_output_is_byte_identical_across_runs() -> None:
    args = ("--schema", str(HERE / "schema.sql"), "--tenant", "acme", "--input", str(HERE / "legitimate.jsonl"))
    assert check(*args).stdout == check(*args).stdout


def test_schema_from_a_live_database(policy_db: PolicyDatabase) -> None:
    result = check(
        "--dsn",
        policy_db.admin_dsn,
        "--tenant",
        "globex",
        "--input",
        "-",
        stdin='{"id": "a", "principal": "agent:support-bot", "sql": "SELECT id FROM orders"}\n'
        '{"id": "b", "principal": "agent:support-bot", "sql": "SELECT id FROM invoices"}\n',
    )
    assert result.returncode == 0, result.stderr
    first, second = (json.loads(line) for line in result.stdout.splitlines())
    assert first["decision"] == "allow" and "'globex'" in first["sql"]
    assert second["reasons"][0]["code"] == "unknown_table"


def test_bad_policy_or_dead_database_is_a_clear_usage_error(tmp_path: Path) -> None:
    bad = tmp_path / "policy.yaml"
    bad.write_text("apiVersion: paybill.dev/v1alpha1\nkind: AgentPolicy\nspec: {subjects: []}\n")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "paybill",
            "policy",
            "check",
            "--policy",
            str(bad),
            "--schema",
            str(HERE / "schema.sql"),
            "--input",
            "-",
        ],
        input="",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "subjects" in result.stderr
    dead = check("--dsn", "postgresql://nobody:s3cret@127.0.0.1:1/db", "--input", "-", stdin="")
    assert dead.returncode == 2 and "cannot read the schema" in dead.stderr
    assert "s3cret" not in dead.stderr


def test_an_input_line_cannot_override_the_tenant_or_approve_itself(tmp_path: Path) -> None:
    """The cases are the agent's words: the tenant and the approvals come from the command line only."""
    lines = [
        {"id": 1, "principal": "agent:support-bot", "sql": "SELECT id, total FROM orders", "tenant": None},
        {"id": 2, "principal": "agent:support-bot", "sql": "SELECT id, total FROM orders", "tenant": "globex"},
        {"id": 3, "principal": "agent:support-bot", "sql": "SELECT id, total FROM orders", "tenant": "acme"},
        {"id": 4, "principal": "agent:support-bot", "sql": "SELECT id FROM orders", "approvals": ["human:x"]},
    ]
    result = check(
        "--schema",
        str(HERE / "schema.sql"),
        "--tenant",
        "acme",
        "--input",
        "-",
        stdin="\n".join(json.dumps(line) for line in lines),
    )
    decisions = {d["id"]: d for d in map(json.loads, result.stdout.splitlines())}
    for case in (1, 2, 4):
        assert decisions[case]["decision"] == "deny", decisions[case]
        assert decisions[case]["reasons"][0]["code"] == "malformed_input"
    assert decisions[3]["decision"] == "allow" and "tenant_id = 'acme'" in decisions[3]["sql"]
