"""The admission stamp is signed (workflows/stamp.py) and the operator verifies it before it runs anything: with the
webhook configurations deleted, a workflow stored with a hand-written stamp is Denied (Unadmitted), nothing run;
one the webhook admitted runs, and each step's audit record names the stamped requester."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from kopf.testing import KopfRunner

from paybill.api.agentworkflow import AgentWorkflowSpec
from paybill.audit import AuditLog
from paybill.database.server import LocalPostgres
from paybill.handlers.admission import CONFIGURATION
from paybill.handlers.stamping import KEYS_SECRET
from paybill.workflows.admission import PLAN_HASHES, POLICY_VERSION, REQUESTER
from paybill.workflows.stamp import (
    ADMISSION_ID,
    RING_SIZE,
    SIGNATURE,
    KeyRing,
    admission_outcome,
    claim_outcome,
    key_id_at,
    new_admission_id,
    new_ring,
    ring_fields,
    ring_of,
    rotated,
    sign,
    spec_digest,
    verify,
)
from test_admission import AGENT, FIX, READ, kubectl_as, tenant_with_policy, workflow
from test_tenant_lifecycle import API, login, wait_workflow

NAMESPACE, NAME = "tenant-acme", "refund"
SPEC = AgentWorkflowSpec.model_validate(
    {"principal": "agent:support-bot", "policyRef": "support", "steps": [READ, FIX]}
)
STAMP = {
    REQUESTER: f"system:serviceaccount:{NAMESPACE}:tenant-agent",
    POLICY_VERSION: "v-1234",
    PLAN_HASHES: json.dumps({"find": "aa", "fix": "bb"}, separators=(",", ":")),
}
NOW = datetime.datetime(2026, 11, 30, 19, 30, tzinfo=datetime.UTC)
ADMITTED = "5f" * 16  # the admission id the mutating webhook made


# -- the signature, pure ------------------------------------------------------------------------------------------


def test_a_signed_stamp_verifies_and_names_its_requester() -> None:
    ring = new_ring(key_id_at(NOW))
    signed = sign(NAMESPACE, NAME, SPEC, STAMP, ring, ADMITTED)
    assert signed[SIGNATURE].startswith(f"v2:{ring.current}:") and signed[ADMISSION_ID] == ADMITTED
    assert verify(NAMESPACE, NAME, SPEC, signed, ring).requester == STAMP[REQUESTER]
    assert admission_outcome(NAMESPACE, NAME, SPEC, signed, ring) is None


def test_each_admission_of_the_same_workflow_signs_a_ticket_of_its_own() -> None:
    """The signature is the ticket one object claims: two admissions of the same namespace, name and spec (one then
    refused 409, or deleted and submitted again) must not share it."""
    ring = new_ring(key_id_at(NOW))
    first, second = (sign(NAMESPACE, NAME, SPEC, STAMP, ring, new_admission_id()) for _ in range(2))
    assert first[SIGNATURE] != second[SIGNATURE]
    assert verify(NAMESPACE, NAME, SPEC, first, ring).problem is None
    assert verify(NAMESPACE, NAME, SPEC, second, ring).problem is None


def test_a_stamp_of_the_format_before_admission_ids_still_verifies() -> None:
    """Workflows admitted by an older operator (v1: no admission id) run after an upgrade."""
    ring = new_ring(key_id_at(NOW))
    message = ["v1", NAMESPACE, NAME, *(STAMP[k] for k in (REQUESTER, POLICY_VERSION, PLAN_HASHES)), spec_digest(SPEC)]
    mac = hmac.new(ring.keys[ring.current], json.dumps(message, separators=(",", ":")).encode(), hashlib.sha256)
    legacy = {**STAMP, SIGNATURE: f"v1:{ring.current}:{mac.hexdigest()}"}
    assert verify(NAMESPACE, NAME, SPEC, legacy, ring).requester == STAMP[REQUESTER]
    forged = {**legacy, SIGNATURE: legacy[SIGNATURE].replace("v1:", "v2:", 1)}  # no id, and v2 covers one
    assert verify(NAMESPACE, NAME, SPEC, forged, ring).problem is not None


OTHER_SPEC = AgentWorkflowSpec.model_validate({**SPEC.model_dump(mode="json"), "steps": [READ]})


@pytest.mark.parametrize(
    ("namespace", "name", "spec", "changed"),
    [
        ("tenant-other", NAME, SPEC, {}),
        (NAMESPACE, "refund-again", SPEC, {}),
        (NAMESPACE, NAME, OTHER_SPEC, {}),
        (NAMESPACE, NAME, SPEC, {REQUESTER: f"system:serviceaccount:{NAMESPACE}:billing"}),
        (NAMESPACE, NAME, SPEC, {POLICY_VERSION: "v-9999"}),
        (NAMESPACE, NAME, SPEC, {PLAN_HASHES: json.dumps({"find": "aa", "fix": "cc"}, separators=(",", ":"))}),
        (NAMESPACE, NAME, SPEC, {ADMISSION_ID: "6a" * 16}),
    ],
    ids=["namespace", "name", "spec", "requester", "policy-version", "plan-hashes", "admission-id"],
)
def test_a_stamp_moved_or_altered_does_not_verify(
    namespace: str, name: str, spec: AgentWorkflowSpec, changed: dict[str, str]
) -> None:
    ring = new_ring(key_id_at(NOW))
    signed = {**sign(NAMESPACE, NAME, SPEC, STAMP, ring, ADMITTED), **changed}
    check = verify(namespace, name, spec, signed, ring)
    assert check.requester is None and check.problem is not None and "does not match" in check.problem


def test_a_hand_written_stamp_is_unadmitted_and_says_why() -> None:
    ring = new_ring(key_id_at(NOW))
    genuine = sign(NAMESPACE, NAME, SPEC, STAMP, ring, ADMITTED)
    assert "signature, admission.paybill.dev/admission-id missing" in str(
        verify(NAMESPACE, NAME, SPEC, STAMP, ring).problem
    )
    forged = {**STAMP, ADMISSION_ID: ADMITTED, SIGNATURE: "forged"}
    assert "not a v2 signature" in str(verify(NAMESPACE, NAME, SPEC, forged, ring).problem)
    other_key = sign(NAMESPACE, NAME, SPEC, STAMP, new_ring("someoneelse"), ADMITTED)
    assert "names key someoneelse, which is not in the operator's key ring" in str(
        verify(NAMESPACE, NAME, SPEC, other_key, ring).problem
    )
    same_id_other_key = sign(NAMESPACE, NAME, SPEC, STAMP, new_ring(ring.current), ADMITTED)
    assert "does not match" in str(verify(NAMESPACE, NAME, SPEC, same_id_other_key, ring).problem)
    denied = admission_outcome(NAMESPACE, NAME, SPEC, {**genuine, REQUESTER: "x"}, ring)
    assert denied is not None and denied.report is not None
    assert (denied.report.phase, denied.report.reason) == ("Denied", "Unadmitted")
    assert [(e.reason, e.warning) for e in denied.events] == [("Unadmitted", True)]
    assert "no step was run" in denied.events[0].message


def test_a_stamp_runs_on_the_one_object_admission_let_through() -> None:
    assert claim_outcome("uid-1", "uid-1") is None
    replay = claim_outcome("uid-2", "uid-1")
    assert replay is not None and replay.report is not None and replay.report.reason == "Unadmitted"
    assert "admitted for another object of this name (uid uid-1): a replay" in replay.report.message
    unknown = claim_outcome("uid-1", None)
    assert unknown is not None and "admission has no record of this stamp" in str(unknown.report)


def test_without_its_keys_the_operator_waits_and_runs_nothing() -> None:
    waiting = admission_outcome(NAMESPACE, NAME, SPEC, STAMP, None)
    assert waiting is not None and waiting.wait is not None and waiting.report is None and waiting.action is None


def test_a_rotated_ring_signs_with_its_new_key_and_still_verifies_the_last_ones() -> None:
    ring = new_ring(key_id_at(NOW))
    first = sign(NAMESPACE, NAME, SPEC, STAMP, ring, ADMITTED)
    for hour in range(1, RING_SIZE + 1):
        ring = rotated(ring, key_id_at(NOW + datetime.timedelta(hours=hour)))
        assert len(ring.keys) == min(hour + 1, RING_SIZE)
        latest = sign(NAMESPACE, NAME, SPEC, STAMP, ring, ADMITTED)
        assert latest[SIGNATURE].split(":")[1] == ring.current
        assert verify(NAMESPACE, NAME, SPEC, latest, ring).problem is None
        expected_first = None if hour < RING_SIZE else "not in the operator's key ring"
        problem = verify(NAMESPACE, NAME, SPEC, first, ring).problem
        assert (problem is None) if expected_first is None else expected_first in str(problem)
    assert ring_of(ring_fields(ring)) == ring


def test_a_stored_ring_that_is_not_whole_is_refused() -> None:
    fields = ring_fields(new_ring("abc"))
    with pytest.raises(ValueError, match="no 'current'"):
        ring_of({k: v for k, v in fields.items() if k != "current"})
    with pytest.raises(ValueError, match="has no key other"):
        ring_of({**fields, "current": b"other"})
    with pytest.raises(ValueError, match="32-byte"):
        KeyRing("abc", {"abc": b"short"})


# -- through the operator -----------------------------------------------------------------------------------------

OPERATOR_NAMESPACE = "paybill-system"


@pytest.fixture
def operator_in_namespace(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Any]:
    """The real operator, told its namespace (as the chart's Deployment is): its keys go to a Secret there."""
    cluster.kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OPERATOR_NAMESPACE}})
    monkeypatch.setenv("PAYBILL_OPERATOR_NAMESPACE", OPERATOR_NAMESPACE)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "state"))
    with KopfRunner(["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"], timeout=90) as runner:
        yield cluster
    assert runner.exit_code == 0, runner.output
    keys = cluster.kube.get("v1", "secrets", KEYS_SECRET, OPERATOR_NAMESPACE)
    for value in (keys or {}).get("data", {}).values():  # key material is never logged
        assert base64.b64decode(value).hex() not in runner.output


def step_records(postgres: LocalPostgres, namespace: str, name: str) -> list[dict[str, Any]]:
    with psycopg.connect(postgres.dsn, autocommit=True) as conn:
        log = AuditLog(lambda: conn)
        return [r.details for r in log.records("AgentWorkflow", f"{namespace}/{name}") if r.event.startswith("Step")]


def warnings_about(cluster: Any, namespace: str, name: str, reason: str) -> list[str]:
    found = cluster.kube.list("v1", "events", namespace)
    return [
        str(e.get("message"))
        for e in found
        if (e.get("involvedObject") or {}).get("name") == name
        and e.get("reason") == reason
        and e.get("type") == "Warning"
    ]


NEEDS_KUBECTL = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


@pytest.mark.slow
@pytest.mark.kubectl
@NEEDS_KUBECTL
def test_with_the_webhooks_deleted_a_forged_stamp_is_denied_unadmitted_and_an_admitted_workflow_runs(
    operator_in_namespace: Any, postgres: LocalPostgres, tmp_path: Path
) -> None:
    cluster = operator_in_namespace
    tenant, namespace = tenant_with_policy(cluster)
    agent = kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)
    admitted = agent("apply", "-f", "-", stdin=workflow(namespace, "refund", [READ]))
    assert admitted.returncode == 0, admitted.stderr
    wait_workflow(cluster, namespace, "refund", "Succeeded")
    genuine = cluster.kube.get(API, "agentworkflows", "refund", namespace)["metadata"]["annotations"]
    assert genuine[SIGNATURE].startswith("v2:")
    assert cluster.kube.get("v1", "secrets", KEYS_SECRET, OPERATOR_NAMESPACE) is not None
    records = step_records(postgres, namespace, "refund")
    assert records and {r["requester"] for r in records} == {f"system:serviceaccount:{namespace}:{AGENT}"}
    # submitted again while it exists: the webhooks admit it (as kube-apiserver asks them before the store finds
    # the name taken), then 409; that admission is its own and frees nothing of the first one's
    twice = agent("create", "-f", "-", stdin=workflow(namespace, "refund", [READ]))
    assert twice.returncode != 0 and "already exists" in twice.stderr, twice.stderr

    for plural in ("mutatingwebhookconfigurations", "validatingwebhookconfigurations"):
        cluster.kube.delete("admissionregistration.k8s.io/v1", plural, CONFIGURATION)
    # the admitted workflow deleted and stored again, stamp and all: a valid signature, on an object never admitted
    replayed = cluster.kube.get(API, "agentworkflows", "refund", namespace)
    stamp = {k: v for k, v in genuine.items() if k.startswith("admission.paybill.dev/")}  # not kopf's progress
    cluster.kube.delete(API, "agentworkflows", "refund", namespace)
    cluster.eventually(lambda: cluster.kube.get(API, "agentworkflows", "refund", namespace) is None, timeout=30)
    cluster.kube.create(
        {
            "apiVersion": API,
            "kind": "AgentWorkflow",
            "metadata": {"name": "refund", "namespace": namespace, "annotations": stamp},
            "spec": replayed["spec"],
        }
    )
    again = wait_workflow(cluster, namespace, "refund", "Denied")
    assert "a replay" in next(c["message"] for c in again["conditions"] if c["type"] == "Denied")
    assert len(step_records(postgres, namespace, "refund")) == len(records)  # nothing ran again
    # another ServiceAccount of the namespace, allowed to create AgentWorkflows, claims the agent's identity
    intruder = kubectl_as(cluster.service_account_kubeconfig(namespace, "tenant-admin"), tmp_path)
    forged_stamps = {
        "copied": stamp,
        "hand-written": {
            REQUESTER: f"system:serviceaccount:{namespace}:{AGENT}",
            POLICY_VERSION: genuine[POLICY_VERSION],
            PLAN_HASHES: genuine[PLAN_HASHES],
            ADMISSION_ID: genuine[ADMISSION_ID],
            SIGNATURE: "v2:" + genuine[SIGNATURE].split(":")[1] + ":" + "0" * 64,
        },
        "none": {},
    }
    for name, stamp in forged_stamps.items():
        body = yaml.safe_load(workflow(namespace, name, [READ, FIX]))
        body["metadata"]["annotations"] = stamp
        created = intruder("create", "-f", "-", stdin=yaml.safe_dump(body))
        assert created.returncode == 0, created.stderr  # no webhook: the API server stores it
    for name in forged_stamps:
        status = wait_workflow(cluster, namespace, name, "Denied")
        denied = next(c for c in status["conditions"] if c["type"] == "Denied")
        assert (denied["status"], denied["reason"]) == ("True", "Unadmitted")
        assert status.get("completedSteps", 0) == 0 and not status.get("steps")
        said = cluster.eventually(lambda name=name: warnings_about(cluster, namespace, name, "Unadmitted"))
        assert "no step was run" in said[0]
        assert step_records(postgres, namespace, name) == []
        assert cluster.kube.get("v1", "secrets", f"agentworkflow-{name}-results", namespace) is None
    assert "does not match" in warnings_about(cluster, namespace, "copied", "Unadmitted")[0]
    assert "does not match" in warnings_about(cluster, namespace, "hand-written", "Unadmitted")[0]
    assert "admission-id missing" in warnings_about(cluster, namespace, "none", "Unadmitted")[0]
    with login(cluster, tenant) as conn:  # the forged FIX never ran
        assert conn.execute("SELECT status FROM orders WHERE id = 1").fetchone() == ("open",)


@pytest.mark.slow
@pytest.mark.kubectl
@NEEDS_KUBECTL
def test_the_key_ring_is_made_once_and_shared_by_operators_of_one_database(
    cluster: Any, postgres: LocalPostgres, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a namespace (a local run) the ring is kept in the control database: a restarted operator (a new
    state directory, nothing else kept) signs with the key the first one made."""
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    monkeypatch.setenv("PAYBILL_DATABASE_URL", postgres.dsn)
    monkeypatch.setenv("PAYBILL_BACKUP_DIR", str(tmp_path / "backups"))
    monkeypatch.delenv("PAYBILL_OPERATOR_NAMESPACE", raising=False)
    args = ["run", "--all-namespaces", "--standalone", "-m", "paybill.handlers"]
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "first"))
    with KopfRunner(args, timeout=90) as first:
        _, namespace = tenant_with_policy(cluster)
        agent = kubectl_as(cluster.service_account_kubeconfig(namespace, AGENT), tmp_path)
        assert agent("apply", "-f", "-", stdin=workflow(namespace, "before", [READ])).returncode == 0
        wait_workflow(cluster, namespace, "before", "Succeeded")
    assert first.exit_code == 0, first.output
    monkeypatch.setenv("PAYBILL_STATE_DIR", str(tmp_path / "second"))
    with KopfRunner(args, timeout=90) as second:
        after = workflow(namespace, "after", [READ, FIX])  # refused until its indexes have the tenant
        cluster.eventually(lambda: agent("apply", "-f", "-", stdin=after).returncode == 0, timeout=30)
        wait_workflow(cluster, namespace, "after", "Succeeded")
    assert second.exit_code == 0, second.output
    signed_by = {
        name: cluster.kube.get(API, "agentworkflows", name, namespace)["metadata"]["annotations"][SIGNATURE].split(":")[
            1
        ]
        for name in ("before", "after")
    }
    assert signed_by["before"] == signed_by["after"]
