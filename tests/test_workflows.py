"""The workflow runner's pure parts: what goes into the results Secret."""

from __future__ import annotations

import json

from paybill.policy.decision import Decision, Reason
from paybill.workflows import StepOutcome, results_secret_data
from paybill.workflows.run import RESULTS_BUDGET


def outcome(name: str, rows: int, executed: bool = True) -> StepOutcome:
    return StepOutcome(
        name, Decision(True, "enforce"), executed, (), ("id", "note"), [(n, "x" * 200) for n in range(rows)]
    )


def test_results_hold_each_query_and_are_cut_to_what_a_secret_holds() -> None:
    data = results_secret_data([outcome("small", 3), outcome("huge", 20000), outcome("skipped", 5, executed=False)])
    assert set(data) == {"small.json", "huge.json"}
    small, huge = json.loads(data["small.json"]), json.loads(data["huge.json"])
    assert small == {"columns": ["id", "note"], "rows": [[n, "x" * 200] for n in range(3)], "truncated": False}
    assert huge["truncated"] and 0 < len(huge["rows"]) < 20000
    assert huge["rows"] == [[n, "x" * 200] for n in range(len(huge["rows"]))]  # a prefix, in order
    assert sum(len(v) for v in data.values()) <= RESULTS_BUDGET


def test_a_database_error_is_audited_in_full_but_shown_as_its_sqlstate() -> None:
    failed = StepOutcome(
        "cast",
        Decision(True, "enforce"),
        reasons=(Reason("database_error", "SQLSTATE 22P02 invalid_text_representation"),),
        error='invalid input syntax for type integer: "secret-customer"',
    )
    assert "secret-customer" not in json.dumps(failed.to_status())
    assert failed.to_status()["reasons"] == [
        {"code": "database_error", "message": "SQLSTATE 22P02 invalid_text_representation"}
    ]
    assert failed.audit_details("agent:bot", "support")["databaseError"] == failed.error
    assert "databaseError" not in outcome("fine", 1).audit_details("agent:bot", "support")
