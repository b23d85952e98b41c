"""The compiled engine decides exactly as its source does (a differential test in Cedar's sense): every corpus
statement and thousands the fuzzing grammar writes, under every fuzzed policy, with and without a tenant."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from paybill.policy import compiled

from .differential import HERE, cases, decisions

GENERATED = 600


@pytest.mark.slow
def test_the_compiled_engine_decides_as_its_source_does() -> None:
    if not compiled.built() or compiled.stale():
        pytest.skip("the engine is not compiled (or not current): there is one build to compare")
    found = cases(GENERATED, seed=20261130)
    native = decisions(found)
    assert all(native["compiled"].values()), native["compiled"]
    run = subprocess.run(
        [sys.executable, str(HERE / "differential.py")],
        input=json.dumps(found),
        env={**os.environ, compiled.SOURCE_ENV: "1"},
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    source = json.loads(run.stdout)
    assert not any(source["compiled"].values()), source["compiled"]
    assert len(native["decisions"]) == len(source["decisions"]) > 5000
    allowed = sum(1 for d in native["decisions"] if d.get("allowed"))
    assert 0 < allowed < len(native["decisions"])  # both outcomes are compared, not one
    differing = [
        (case, ours, theirs)
        for case, ours, theirs in zip(
            [c for c in found for _ in range(len(native["decisions"]) // len(found))],
            native["decisions"],
            source["decisions"],
            strict=True,
        )
        if ours != theirs
    ]
    assert differing == [], differing[:3]
