"""Approvals bound to plan hashes, decided without a cluster or a database: who may write an approval or a rejection
(workflows/approvals.py, asked by the admission webhook), what a recorded approval grants (exactly its plan hash,
for its step only), and how a run that waits for one is reported (workflows/reconcile.py)."""

from __future__ import annotations

from typing import Any

import pytest

from paybill.api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from paybill.api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus
from paybill.policy.decision import Decision, Reason
from paybill.workflows import StepOutcome, approvals
from paybill.workflows import reconcile as workflows
from paybill.workflows.approvals import APPROVE_PREFIX, REJECT_PREFIX, Grant, Requester, Verdict
from paybill.workflows.reconcile import PolicyView, Run, WorkflowObject

UID = "uid-1"
H1, H2, H3 = "1" * 32, "2" * 32, "3" * 32
ALICE = Requester("alice", ("approvers", "system:authenticated"))
AGENT = Requester("system:serviceaccount:tenant-acme:tenant-agent", ("system:serviceaccounts",))
STEPS = ("find", "refund")
SPEC = AgentWorkflowSpec.model_validate(
    {
        "principal": "agent:bot",
        "policyRef": "support",
        "steps": [
            {"name": "find", "kind": "query", "sql": "SELECT id FROM orders"},
            {"name": "refund", "kind": "mutation", "sql": "UPDATE orders SET status = 'r' WHERE id = 1"},
        ],
    }
)
POLICY = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}],
        "rules": [{"id": "read", "effect": "allow", "actions": ["select"], "tables": ["orders"]}],
    }
)
NEEDS = Reason("approval_required", "needs 1 approval(s) from user:alice")


def review(old: dict[str, str] | None, new: dict[str, str], who: Requester = ALICE, may: bool = True, **kw: Any) -> Any:
    return approvals.review(old, new, who, may, UID, STEPS, **kw)


# -- who may write an approval (the webhook) -------------------------------------------------------------------------


def test_other_annotations_are_not_the_approvals_business() -> None:
    assert review({"a": "1"}, {"a": "2", "team": "x"}, AGENT, may=False) == approvals.Review(True)


def test_an_approver_approving_a_hash_is_admitted_and_recorded_with_who() -> None:
    verdict = review({}, {APPROVE_PREFIX + "refund": H1})
    assert verdict.allowed and verdict.grants == (Grant(UID, "refund", Verdict.APPROVE, H1, "user:alice"),)
    rejected = review({}, {REJECT_PREFIX + "refund": H1})
    assert rejected.grants == (Grant(UID, "refund", Verdict.REJECT, H1, "user:alice"),)


@pytest.mark.parametrize(
    ("who", "may", "submitter", "message"),
    [
        pytest.param(AGENT, True, None, "is a ServiceAccount", id="the-agent-even-with-the-verb"),
        pytest.param(
            Requester("system:serviceaccount:tenant-acme:helper"), True, None, "is a ServiceAccount", id="any-account"
        ),
        pytest.param(Requester("", ()), True, None, "is a ServiceAccount", id="nobody"),
        pytest.param(ALICE, True, "alice", "submitted this workflow", id="the-submitter"),
        pytest.param(Requester("bob"), False, None, "may not approve agentworkflows", id="without-the-approve-verb"),
    ],
)
def test_who_may_not_approve_or_reject(who: Requester, may: bool, submitter: str | None, message: str) -> None:
    for key in (APPROVE_PREFIX + "refund", REJECT_PREFIX + "refund"):
        for old, new in (({}, {key: H1}), ({key: H1}, {key: H2}), ({key: H1}, {})):  # add, change, remove
            verdict = review(old, new, who, may, submitter=submitter)
            assert not verdict.allowed and message in verdict.message and verdict.grants == ()


def test_a_person_who_can_act_as_the_submitting_account_may_not_approve() -> None:
    """Whoever may mint the agent's tokens or impersonate it can submit as the agent: approving too would be one
    person doing both."""
    key = APPROVE_PREFIX + "refund"
    verdict = review({}, {key: H1}, acts_as_submitter=True, submitter=AGENT.username)
    assert not verdict.allowed and verdict.grants == ()
    assert "can act as system:serviceaccount:tenant-acme:tenant-agent, which submitted this workflow" in verdict.message
    assert review({}, {key: H1}, acts_as_submitter=False, submitter=AGENT.username).allowed


def test_a_create_that_carries_an_approval_is_the_agent_approving_itself() -> None:
    verdict = review(None, {APPROVE_PREFIX + "refund": H1}, AGENT)
    assert not verdict.allowed and "ServiceAccount" in verdict.message


@pytest.mark.parametrize(
    ("new", "message"),
    [
        ({APPROVE_PREFIX + "nosuch": H1}, "no step 'nosuch'"),
        ({APPROVE_PREFIX + "refund": "yes"}, "must be the step's plan hash"),
        ({REJECT_PREFIX + "refund": "A" * 32}, "must be the step's plan hash"),
    ],
)
def test_an_approval_names_a_step_and_a_plan_hash(new: dict[str, str], message: str) -> None:
    verdict = review({}, new)
    assert not verdict.allowed and message in verdict.message


def test_withdrawing_an_approval_is_recorded_and_grants_nothing() -> None:
    key = APPROVE_PREFIX + "refund"
    withdrawn = review({key: H1}, {})
    assert withdrawn.allowed and withdrawn.grants == (Grant(UID, "refund", Verdict.APPROVE, "", "user:alice", key),)
    assert withdrawn.grants[0].event == "ApprovalWithdrawn"
    assert review({REJECT_PREFIX + "refund": H1}, {}).grants[0].event == "RejectionWithdrawn"
    # withdrawn, then set again by bob: bob's alone; and a withdrawal voids no hash in status
    bob = Grant(UID, "refund", Verdict.APPROVE, H1, "user:bob")
    assert approvals.granted("refund", H1, {key: H1}, [APPROVED, *withdrawn.grants, bob]) == {"user:bob"}
    assert approvals.voided("refund", H2, [APPROVED, *withdrawn.grants]) == [APPROVED]


def test_requesters_from_user_info() -> None:
    info = {"username": "system:serviceaccount:ns:sa", "groups": ["system:serviceaccounts", "system:authenticated"]}
    assert Requester.from_user_info(info).service_account
    assert not Requester.from_user_info({"username": "alice"}).service_account
    assert Requester.from_user_info(None) == Requester("", ())


# -- what recorded approvals grant (the reconciler) ------------------------------------------------------------------

APPROVED = Grant(UID, "refund", Verdict.APPROVE, H1, "user:alice")


def test_an_annotation_without_a_record_grants_nothing() -> None:
    annotations = {APPROVE_PREFIX + "refund": H1}
    assert approvals.granted("refund", H1, annotations, []) == frozenset()
    assert approvals.granted("refund", H1, annotations, [APPROVED]) == {"user:alice"}


def test_an_approval_grants_exactly_its_hash_and_its_step() -> None:
    annotations = {APPROVE_PREFIX + "refund": H1, APPROVE_PREFIX + "find": H1}
    assert approvals.granted("refund", H2, annotations, [APPROVED]) == frozenset()  # another plan
    assert approvals.granted("find", H1, annotations, [APPROVED]) == frozenset()  # another step
    moved = {APPROVE_PREFIX + "refund": H2}  # the annotation now names another hash than the one recorded
    assert approvals.granted("refund", H2, moved, [APPROVED]) == frozenset()
    assert approvals.granted("refund", H1, {}, [APPROVED]) == frozenset()  # withdrawn


def test_only_this_workflows_records_count() -> None:
    records = [APPROVED.details(), {**APPROVED.details(), "uid": "recreated"}, {"step": "x"}]
    assert approvals.recorded(records, UID) == [APPROVED]


def test_a_rejection_needs_its_record_too() -> None:
    rejected = Grant(UID, "refund", Verdict.REJECT, H2, "user:bob")
    assert approvals.rejection("refund", {REJECT_PREFIX + "refund": H2}, [APPROVED]) is None
    assert approvals.rejection("refund", {REJECT_PREFIX + "refund": H2}, [APPROVED, rejected]) == rejected


def test_the_approver_role_can_approve_and_nothing_more() -> None:
    role = approvals.approver_cluster_role()
    assert role["metadata"]["name"] == "paybill-agentworkflow-approver"
    verbs = {
        (group, resource, verb)
        for r in role["rules"]
        for group in r["apiGroups"]
        for resource in r["resources"]
        for verb in r["verbs"]
    }
    assert ("paybill.dev", "agentworkflows", "approve") in verbs and ("paybill.dev", "agentworkflows", "patch") in verbs
    assert not {v for v in verbs if v[1] not in ("agentworkflows", "agentpolicies")}  # no Secrets, nothing else
    assert not {v for v in verbs if v[1] == "agentpolicies" and v[2] not in ("get", "list", "watch")}


# -- a run that waits for approval -----------------------------------------------------------------------------------


GUARD_DENIED = Reason("denied", "the policy engine denied the statement")


def waiting_step(plan_hash: str = H1) -> StepOutcome:
    """As the run reports it: the engine's reason, and the guard's own for any refused statement."""
    decision = Decision(False, "enforce", (NEEDS,), plan_hash=plan_hash)
    return StepOutcome("refund", decision, reasons=(NEEDS, GUARD_DENIED))


def test_a_step_refused_for_anything_else_does_not_wait() -> None:
    other = Reason("no_allow_rule", "no rule allows delete on orders")
    both = StepOutcome("refund", Decision(False, "enforce", (NEEDS, other)), reasons=(NEEDS, other, GUARD_DENIED))
    assert not workflows.awaits_approval(both)
    assert workflows.awaits_approval(waiting_step())
    limited = StepOutcome("refund", Decision(False, "enforce", (NEEDS,)), reasons=(NEEDS, Reason("timeout", "t")))
    assert not workflows.awaits_approval(limited)


FOUND = StepOutcome("find", Decision(True, "enforce", plan_hash=H3, sql="SELECT id FROM orders"), True)


def workflow(annotations: dict[str, str] | None = None, **status: Any) -> WorkflowObject:
    return WorkflowObject("wf", "tenant-acme", SPEC, AgentWorkflowStatus.model_validate(status), UID, annotations or {})


def test_a_step_that_needs_approval_waits_with_its_plan_hash() -> None:
    outcome = workflows.finished(workflow(), Run([FOUND, waiting_step()], "v1", False))
    assert outcome.report is not None and outcome.retry is not None
    assert (outcome.report.phase, outcome.report.ok, outcome.report.reason) == (
        "AwaitingApproval",
        False,
        "AwaitingApproval",
    )
    status = outcome.report.written()
    assert status["approval"]["step"] == "refund" and status["approval"]["planHash"] == H1
    assert status["approval"]["policyVersion"] == "v1" and status["approval"]["voided"] == []
    assert f"kubectl annotate agentworkflow/wf paybill.dev/approve-refund={H1}" in status["approval"]["message"]
    assert status["completedSteps"] == 1 and [s["name"] for s in status["steps"]] == ["find", "refund"]
    assert [n.reason for n in outcome.events] == ["AwaitingApproval"]
    again = workflows.finished(workflow(**status, phase="AwaitingApproval"), Run([FOUND, waiting_step()], "v1", False))
    assert again.events == ()  # said once


def test_a_changed_policy_voids_the_awaited_hash_and_says_so() -> None:
    before = workflows.finished(workflow(), Run([waiting_step(H1)], "v1", False)).report
    assert before is not None
    stale = Grant(UID, "refund", Verdict.APPROVE, H3, "user:alice")
    after = workflows.finished(
        workflow(**before.written(), phase="AwaitingApproval"), Run([waiting_step(H2)], "v2", False), [stale]
    )
    assert after.report is not None and after.report.phase == "AwaitingApproval"
    approval = after.report.written()["approval"]
    assert approval["planHash"] == H2 and approval["voided"] == sorted([H1, H3])
    assert f"approvals of {H1}, {H3} are void (policy version is now v2)" in approval["message"]
    assert [n.reason for n in after.events] == ["AwaitingApproval", "ApprovalVoided"]


def test_a_rejected_step_ends_the_run_denied() -> None:
    rejected = Grant(UID, "refund", Verdict.REJECT, H1, "user:bob")
    annotated = workflow({REJECT_PREFIX + "refund": H1})
    outcome = workflows.finished(annotated, Run([FOUND, waiting_step()], "v1", False), [rejected])
    assert outcome.report is not None and outcome.retry is None
    assert (outcome.report.phase, outcome.report.reason) == ("Denied", "Rejected")
    assert "rejected by user:bob" in outcome.report.message
    unrecorded = workflows.finished(annotated, Run([FOUND, waiting_step()], "v1", False), [])
    assert unrecorded.report is not None and unrecorded.report.phase == "AwaitingApproval"


def test_each_step_is_given_only_its_own_approvals() -> None:
    annotated = workflow({APPROVE_PREFIX + "refund": H1})
    assert workflows.step_approvals(annotated, [APPROVED], "refund", H1) == {"user:alice"}
    assert workflows.step_approvals(annotated, [APPROVED], "find", H1) == frozenset()
    both = workflow({APPROVE_PREFIX + "refund": H1, REJECT_PREFIX + "refund": H1})
    rejected = Grant(UID, "refund", Verdict.REJECT, H1, "user:bob")
    assert workflows.step_approvals(both, [APPROVED, rejected], "refund", H1) == frozenset()  # rejection wins


def seen(version: str | None = "v1", grants: tuple[Grant, ...] = ()) -> workflows.Observed:
    view = PolicyView(POLICY, AgentPolicyStatus.model_validate({"phase": "Ready", "policyVersion": version}))
    return workflows.Observed(view, grants=grants)


AWAITING = {
    "phase": "AwaitingApproval",
    "approval": {"step": "refund", "planHash": H1, "policyVersion": "v1", "message": "approve it"},
}


@pytest.mark.parametrize(
    ("annotations", "observed", "runs"),
    [
        pytest.param({}, seen(), False, id="nothing-new"),
        pytest.param({APPROVE_PREFIX + "refund": H1}, seen(), False, id="an-annotation-no-record"),
        pytest.param({APPROVE_PREFIX + "refund": H2}, seen(grants=(APPROVED,)), False, id="a-record-of-another-hash"),
        pytest.param({APPROVE_PREFIX + "refund": H1}, seen(grants=(APPROVED,)), True, id="approved"),
        pytest.param(
            {REJECT_PREFIX + "refund": H1},
            seen(grants=(Grant(UID, "refund", Verdict.REJECT, H1, "user:bob"),)),
            True,
            id="rejected",
        ),
        pytest.param({}, seen("v2"), True, id="the-policy-changed"),
    ],
)
def test_a_waiting_workflow_runs_again_only_on_news(
    annotations: dict[str, str], observed: workflows.Observed, runs: bool
) -> None:
    _runs_again_only_on_news(annotations, observed, runs, AWAITING)


def test_approvals_already_counted_are_no_news() -> None:
    """minApprovals 2 and one given: the run was tried with it, and trying again at every look changes nothing."""
    counted = {**AWAITING, "approval": {**AWAITING["approval"], "approvedBy": ["user:alice"]}}
    approved = {APPROVE_PREFIX + "refund": H1}
    _runs_again_only_on_news(approved, seen(grants=(APPROVED,)), False, counted)
    bob = Grant(UID, "refund", Verdict.APPROVE, H1, "user:bob", APPROVE_PREFIX + "refund.bob")
    both = {**approved, APPROVE_PREFIX + "refund.bob": H1}
    _runs_again_only_on_news(both, seen(grants=(APPROVED, bob)), True, counted)  # a second approver
    _runs_again_only_on_news({}, seen(grants=(APPROVED,)), True, counted)  # alice withdrew: status says so again


def _runs_again_only_on_news(
    annotations: dict[str, str], observed: workflows.Observed, runs: bool, status: dict[str, Any]
) -> None:
    outcome = workflows.decide(workflow(annotations, **status), observed)
    if runs:
        assert outcome.retry is None  # it goes on to load the engine (or wait for what that needs)
    else:
        assert outcome.retry is not None and outcome.retry.message == "approve it" and outcome.report is None


def test_each_approver_approves_under_a_key_of_their_own() -> None:
    """minApprovals > 1: a write that changes nothing is no approval, so a second approver adds
    `approve-<step>.<anything>`; each key counts for whoever last wrote it, while it still names the hash."""
    bob_key = APPROVE_PREFIX + "refund.bob"
    written = review({APPROVE_PREFIX + "refund": H1}, {APPROVE_PREFIX + "refund": H1, bob_key: H1}, Requester("bob"))
    bob = Grant(UID, "refund", Verdict.APPROVE, H1, "user:bob", bob_key)
    assert written.allowed and written.grants == (bob,)
    both = {APPROVE_PREFIX + "refund": H1, bob_key: H1}
    assert approvals.granted("refund", H1, both, [APPROVED, bob]) == {"user:alice", "user:bob"}
    assert approvals.granted("refund", H1, {bob_key: H1}, [APPROVED, bob]) == {"user:bob"}  # alice withdrew hers
    assert approvals.granted("refund", H1, {bob_key: H2}, [APPROVED, bob]) == frozenset()
    assert review({APPROVE_PREFIX + "refund": H1}, {APPROVE_PREFIX + "refund": H1}, Requester("bob")).grants == ()
    unknown = review({}, {APPROVE_PREFIX + "nosuch.bob": H1}, Requester("bob"))
    assert not unknown.allowed and "no step 'nosuch'" in unknown.message


def test_a_withdrawn_approval_does_not_come_back_when_another_approver_sets_the_same_key() -> None:
    """alice approves, withdraws (removing the annotation is recorded nowhere), bob sets the same key: bob's
    approval counts, alice's does not come back with it."""
    bob = Grant(UID, "refund", Verdict.APPROVE, H1, "user:bob", APPROVE_PREFIX + "refund")
    assert approvals.granted("refund", H1, {APPROVE_PREFIX + "refund": H1}, [APPROVED, bob]) == {"user:bob"}


def test_records_without_their_key_are_the_plain_keys() -> None:
    """Grants recorded before keys were recorded with them stand for `approve-<step>` / `reject-<step>`."""
    details = APPROVED.details()
    del details["annotation"]
    assert Grant.from_details(details) == APPROVED
    assert APPROVED.annotation == APPROVE_PREFIX + "refund"
