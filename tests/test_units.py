"""Pure pieces: patches, selectors, conditions, namespace ownership, kopf persistence, PostgreSQL runner."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import kopf
import psycopg
import pytest

from paybill.database.server import LocalPostgres
from paybill.handlers.persistence import DigestDiffBaseStorage
from paybill.kube.patching import PatchError, json_patch, merge_patch
from paybill.kube.selectors import SelectorError, match_label_selector, parse_field_selector, parse_label_selector
from paybill.lifecycle.conditions import set_condition
from paybill.lifecycle.tenant import TENANT_LABEL, check_namespace


def test_merge_patch_follows_rfc7386() -> None:
    assert merge_patch({"a": "b", "c": {"d": "e", "f": "g"}}, {"a": "z", "c": {"f": None}}) == {
        "a": "z",
        "c": {"d": "e"},
    }
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_json_patch_is_atomic() -> None:
    doc = {"a": {"b": 1}}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "replace", "path": "/a/b", "value": 2}, {"op": "remove", "path": "/x"}])
    assert doc == {"a": {"b": 1}}
    assert json_patch(doc, [{"op": "move", "from": "/a/b", "path": "/c"}]) == {"a": {}, "c": 1}


def test_label_and_field_selectors() -> None:
    match = parse_label_selector("tier=gold,env in (prod, staging),!legacy,team")
    assert match({"tier": "gold", "env": "prod", "team": "x"})
    assert not match({"tier": "gold", "env": "dev", "team": "x"})
    assert not match({"tier": "gold", "env": "prod", "team": "x", "legacy": "1"})
    assert match_label_selector({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {"a": "2"})
    by_name = parse_field_selector("metadata.name!=x")
    assert by_name({"metadata": {"name": "y"}}) and not by_name({"metadata": {"name": "x"}})
    with pytest.raises(SelectorError):
        parse_field_selector("spec.secret=1")


def test_condition_transition_time_moves_only_on_status_change() -> None:
    first = set_condition([], "Ready", False, "Waiting", "a")
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = set_condition(first, "Ready", False, "StillWaiting", "b")
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z" and same[0]["reason"] == "StillWaiting"
    flipped = set_condition(same, "Ready", True, "Done", "c", generation=3)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z" and flipped[0]["observedGeneration"] == 3
    assert len(flipped) == 1


def test_namespaces_of_others_are_never_adopted() -> None:
    ours = {
        "metadata": {
            "name": "tenant-a",
            "ownerReferences": [
                {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "name": "a", "uid": "u-a", "controller": True}
            ],
        }
    }
    assert check_namespace(ours, "tenant-a", "u-a", None).ok
    assert check_namespace(None, "tenant-a", "u-a", None).reason == "Missing"
    theirs = check_namespace({"metadata": {"name": "tenant-a", "labels": {TENANT_LABEL: "b"}}}, "tenant-a", "u-a", None)
    assert not theirs.ok and theirs.reason == "NamespaceConflict" and "'b'" in theirs.message
    assert check_namespace({"metadata": {"name": "tenant-a"}}, "tenant-a", "u-a", None).reason == "NamespaceConflict"


def test_kopf_diffbase_stays_small_on_large_objects() -> None:
    storage = DigestDiffBaseStorage()
    raw = {
        "apiVersion": "paybill.dev/v1alpha1",
        "kind": "AgentWorkflow",
        "metadata": {"name": "w"},
        "spec": {"steps": [{"name": f"s{i}", "sql": "SELECT 1 " * 400} for i in range(100)]},
    }
    body = kopf.Body(raw)
    patch = kopf.Patch()
    storage.store(body=body, patch=patch, essence=storage.build(body=body))
    stored = patch["metadata"]["annotations"]
    assert len(raw["spec"]["steps"][0]["sql"]) * 100 > 256 * 1024
    assert max(len(v) for v in stored.values()) <= 64
    annotated = kopf.Body({**raw, "metadata": {"name": "w", "annotations": dict(stored)}})
    assert storage.fetch(body=annotated) == storage.build(body=annotated)  # unchanged: no diff
    changed = kopf.Body({**raw, "spec": {"steps": []}, "metadata": {"name": "w", "annotations": dict(stored)}})
    assert storage.fetch(body=changed) != storage.build(body=changed)  # changed: kopf sees an update


def test_a_spec_edited_and_edited_back_is_still_an_update_for_kopf() -> None:
    """Edits A -> B -> A seen only at A leave the spec as kopf last handled it, but the generation moved on:
    kopf must call the update handler, or status.observedGeneration stays behind metadata.generation."""
    storage = DigestDiffBaseStorage()
    raw = {"apiVersion": "paybill.dev/v1alpha1", "kind": "Tenant", "spec": {"planRef": "pro"}}
    handled = kopf.Body({**raw, "metadata": {"name": "t", "generation": 1}})
    patch = kopf.Patch()
    storage.store(body=handled, patch=patch, essence=storage.build(body=handled))
    annotations = dict(patch["metadata"]["annotations"])
    same = kopf.Body({**raw, "metadata": {"name": "t", "generation": 1, "annotations": annotations}})
    assert storage.fetch(body=same) == storage.build(body=same)
    reverted = kopf.Body({**raw, "metadata": {"name": "t", "generation": 3, "annotations": annotations}})
    assert storage.fetch(body=reverted) != storage.build(body=reverted)


def test_local_postgres_starts_serves_and_stops() -> None:
    directory = Path(tempfile.mkdtemp(prefix="paybill-pg-"))
    os.chmod(directory, 0o755)
    server = LocalPostgres(directory)
    try:
        dsn = server.start()
        assert dsn.startswith("postgresql://postgres:")
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SHOW listen_addresses").fetchone() == ("127.0.0.1",)
        for wrong in ({"password": "wrong"}, {"password": ""}):  # scram-sha-256: no login without the password
            with pytest.raises(psycopg.OperationalError, match="password"):
                psycopg.connect(psycopg.conninfo.make_conninfo(dsn, **wrong), connect_timeout=2)
        assert not list(directory.rglob("*pwfile*"))  # initdb's password file is gone
        assert (directory / "superuser.password").stat().st_mode & 0o777 == 0o600
        server.stop()
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(dsn, connect_timeout=2)
    finally:
        server.remove()  # its 40 MB of data too, every run
