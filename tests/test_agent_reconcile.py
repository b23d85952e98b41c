"""The AgentPolicy and AgentWorkflow reconcilers' decisions, table by table, without a cluster or a database:
every rule their handlers carry out (waits, conflicts, invalid policies, installs, at-most-once runs, how a run
finishes) as (the object, what was observed) -> the action, status, Events and audit record."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import kopf
import pytest

from paybill.api.agentpolicy import AgentPolicySpec, AgentPolicyStatus
from paybill.api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus
from paybill.api.tenant import Access, DatabasePlacement, TenantStatus
from paybill.lifecycle import agentpolicy as policies
from paybill.lifecycle.agentpolicy import (
    Failure,
    FailureKind,
    Install,
    Installation,
    PolicyObject,
    TenantView,
    Uninstall,
)
from paybill.lifecycle.agents import AuditRecord, Outcome, Report, Retry, Wait
from paybill.lifecycle.evidence import Records
from paybill.lifecycle.outcome import Notice
from paybill.policy.decision import Decision, Reason
from paybill.workflows import StepOutcome
from paybill.workflows import reconcile as workflows
from paybill.workflows.reconcile import EngineFailure, LoadEngine, PolicyView, Run, RunSteps, WorkflowObject

SPEC = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:bot"}],
        "rules": [
            {"id": "read", "effect": "allow", "actions": ["select"], "tables": ["orders"]},
            {"id": "write", "effect": "allow", "actions": ["update"], "tables": ["orders"], "columns": ["status"]},
        ],
    }
)
PLACEMENT = DatabasePlacement.model_validate(
    {"isolation": "pooled", "database": "paybill_pooled", "schema": "app", "role": "t_acme"}
)
MOVED = DatabasePlacement.model_validate({"isolation": "silo", "database": "t_acme", "schema": "app", "role": "t_acme"})
NO_TENANT: dict[str, Any] = {"tenant": None}


def tenant(phase: str | None = "Active", access: str | None = "full", database: Any = PLACEMENT) -> TenantView:
    return TenantView("acme", TenantStatus(phase=phase, access=access, database=database))


def policy(expected: str | None = None, **status: Any) -> PolicyObject:
    return PolicyObject("support", "tenant-acme", SPEC, AgentPolicyStatus.model_validate(status), expected)


def seen(**observed: Any) -> policies.Observed:
    """What the handler reads; the operator's records agree with the tenant's status unless `records` says."""
    given = {"tenant": tenant(), **observed}
    view = given["tenant"]
    records = Records(view.status.database, access=view.access) if view else Records(None)
    return policies.Observed(**{"records": records, **given})


def install(
    access: Access = Access.FULL, placement: DatabasePlacement = PLACEMENT, previous: str | None = None
) -> Outcome:
    return Outcome(action=Install("acme", placement, access, previous))


@pytest.mark.parametrize(
    ("said", "database", "granted"),
    [
        (Access.FULL, Access.NONE, Access.NONE),  # a suspended tenant whose status was forged to full
        (Access.FULL, Access.READ_ONLY, Access.READ_ONLY),
        (Access.FULL, None, Access.NONE),  # the role's access not read: nothing granted
        (Access.READ_ONLY, Access.FULL, Access.READ_ONLY),  # the tenant being restricted: status first
        (Access.FULL, Access.FULL, Access.FULL),
    ],
)
def test_an_agent_gets_no_more_than_its_tenants_role_has_in_the_database(
    said: Access, database: Access | None, granted: Access
) -> None:
    """status.access is evidence (third outsider, issue 13, finding 4): the agent is installed with the least of
    what status says and what the tenant's role may do in the database."""
    view = tenant(access=str(said))
    seen_ = policies.Observed(view, records=Records(view.status.database, access=database))
    assert policies.decide(policy(), seen_) == install(granted)


def waiting(reason: str, message: str, delay: float) -> Outcome:
    return Outcome(wait=Wait(reason, message, delay))


def conflict(reason: str, message: str) -> Outcome:
    return Outcome(
        report=Report("Conflict", False, reason, message, AgentPolicyStatus(tenant="acme")),
        events=(Notice(reason, message, warning=True),),
        retry=Retry(message, 60),
    )


NOT_READY = "its database is not ready"


@pytest.mark.parametrize(
    ("the_policy", "observed", "expected"),
    [
        pytest.param(
            policy(),
            seen(**NO_TENANT),
            waiting("TenantNotFound", "namespace tenant-acme belongs to no Tenant", 30),
            id="no-tenant-controls-the-namespace",
        ),
        pytest.param(
            policy(),
            seen(**NO_TENANT, database_configured=False),
            waiting("TenantNotFound", "namespace tenant-acme belongs to no Tenant", 30),
            id="the-tenant-is-looked-for-before-the-database",
        ),
        pytest.param(
            policy(),
            seen(database_configured=False),
            Outcome(
                report=Report(
                    "Pending",
                    False,
                    "DatabaseNotConfigured",
                    "the operator has no tenant database",
                    AgentPolicyStatus(),
                )
            ),
            id="no-database-configured:-said-once,-not-retried",
        ),
        pytest.param(
            policy(),
            seen(tenant=tenant(phase="Provisioning")),
            waiting("WaitingForTenant", f"tenant acme is Provisioning; {NOT_READY}", 10),
            id="tenant-provisioning",
        ),
        pytest.param(
            policy(),
            seen(tenant=tenant(phase=None, database=None)),
            waiting("WaitingForTenant", f"tenant acme is new; {NOT_READY}", 10),
            id="tenant-new",
        ),
        pytest.param(
            policy(),
            seen(tenant=tenant(phase="Offboarding")),
            waiting("WaitingForTenant", f"tenant acme is Offboarding; {NOT_READY}", 10),
            id="tenant-offboarding",
        ),
        pytest.param(
            policy(),
            seen(tenant=tenant(database=None)),
            waiting("WaitingForTenant", f"tenant acme is Active; {NOT_READY}", 10),
            id="tenant-active-without-data",
        ),
        pytest.param(
            policy(expected="read_only/paybill_pooled/app"),
            seen(),
            Outcome(retry=Retry("tenant acme is changing to read_only/paybill_pooled/app", 1)),
            id="the-tenant-has-not-reached-the-state-its-reconcile-announced",
        ),
        pytest.param(
            policy(expected="full/paybill_pooled/app"), seen(), install(), id="the-announced-tenant-state-is-reached"
        ),
        pytest.param(
            policy(),
            seen(secret_conflict="secret/agent-support is not this AgentPolicy's"),
            conflict("SecretConflict", "secret/agent-support is not this AgentPolicy's"),
            id="someone-elses-secret-has-the-credentials-name",
        ),
        pytest.param(
            policy(expected="read_only/paybill_pooled/app"),
            seen(secret_conflict="squatted"),
            Outcome(retry=Retry("tenant acme is changing to read_only/paybill_pooled/app", 1)),
            id="the-tenant-change-is-waited-for-before-the-secret-conflict",
        ),
        pytest.param(policy(), seen(), install(), id="active-tenant-installs"),
        pytest.param(
            policy(),
            seen(tenant=tenant(phase="Suspended", access="none")),
            install(Access.NONE),
            id="suspended-tenant-installs-without-login",
        ),
        pytest.param(
            policy(),
            seen(tenant=tenant(access="read_only")),
            install(Access.READ_ONLY),
            id="read-only-tenant-installs-reads-only",
        ),
        pytest.param(
            policy(),
            seen(tenant=tenant(access=None)),
            install(Access.NONE),
            id="no-recorded-access-is-none",
        ),
        pytest.param(
            policy(database="paybill_pooled"),
            seen(tenant=tenant(database=MOVED)),
            install(placement=MOVED, previous="paybill_pooled"),
            id="moved-data-drops-the-grants-where-they-were",
        ),
    ],
)
def test_policy_decide(the_policy: PolicyObject, observed: policies.Observed, expected: Outcome) -> None:
    assert policies.decide(the_policy, observed) == expected


DONE = Installation("a_support", "v2", ("customers", "orders"))
SUMMARY = "role a_support in paybill_pooled.app: 2 rules over customers, orders; tenant access full"
INSTALLED_FIELDS = {
    "tenant": "acme",
    "role": "a_support",
    "database": "paybill_pooled",
    "schema": "app",
    "tables": ["customers", "orders"],
    "access": "full",
    "policyVersion": "v2",
    "credentialsSecret": "agent-support",
}


@pytest.mark.parametrize(
    ("before", "done", "announced"),
    [
        pytest.param({}, DONE, True, id="first-install"),
        pytest.param({"policyVersion": "v1", "access": "full"}, DONE, True, id="new-policy-version"),
        pytest.param({"policyVersion": "v2", "access": "read_only"}, DONE, True, id="tenant-access-changed"),
        pytest.param({"policyVersion": "v2", "access": "full"}, DONE, False, id="nothing-changed:-no-event-nor-record"),
    ],
)
def test_an_installed_policy_is_ready_and_announced_when_it_changed(
    before: dict[str, Any], done: Installation, announced: bool
) -> None:
    outcome = policies.installed(policy(**before), Install("acme", PLACEMENT, Access.FULL, None), done)
    assert outcome.report is not None
    assert (outcome.report.phase, outcome.report.ok, outcome.report.reason) == ("Ready", True, "Installed")
    assert outcome.report.message == SUMMARY
    assert outcome.report.written() == INSTALLED_FIELDS
    assert outcome.retry is None and outcome.wait is None and outcome.action is None
    if announced:
        assert outcome.events == (Notice("Installed", SUMMARY),)
        details = {k: v for k, v in INSTALLED_FIELDS.items() if k != "credentialsSecret"}
        assert outcome.audit == AuditRecord("AgentPolicy", "tenant-acme/support", "Installed", details)
    else:
        assert outcome.events == () and outcome.audit is None


def test_an_installation_over_no_tables_says_so() -> None:
    outcome = policies.installed(
        policy(), Install("acme", PLACEMENT, Access.READ_ONLY, None), Installation("a_support", "v1", ())
    )
    assert outcome.report is not None
    assert (
        outcome.report.message
        == "role a_support in paybill_pooled.app: 2 rules over no tables; tenant access read_only"
    )


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        pytest.param(
            Failure(FailureKind.INVALID_POLICY, "unknown column orders.nope"),
            Outcome(
                report=Report(
                    "Invalid", False, "InvalidPolicy", "unknown column orders.nope", AgentPolicyStatus(tenant="acme")
                ),
                events=(Notice("InvalidPolicy", "unknown column orders.nope", warning=True),),
            ),
            id="invalid-policy:-permanent,-not-retried",
        ),
        pytest.param(
            Failure(FailureKind.NAME_CONFLICT, "role a_support exists and is not Paybill's"),
            conflict("NameConflict", "role a_support exists and is not Paybill's"),
            id="a-role-paybill-did-not-create",
        ),
        pytest.param(
            Failure(FailureKind.SECRET_CONFLICT, "squatted since the password was read"),
            conflict("SecretConflict", "squatted since the password was read"),
            id="the-secret-was-squatted-while-installing",
        ),
        pytest.param(
            Failure(FailureKind.DATABASE_UNAVAILABLE, "waited 5s for tenants' open transactions; will retry"),
            waiting("DatabaseUnavailable", "waited 5s for tenants' open transactions; will retry", 10),
            id="database-unavailable",
        ),
    ],
)
def test_a_failed_install(failure: Failure, expected: Outcome) -> None:
    assert policies.failed(failure, "acme") == expected


@pytest.mark.parametrize(
    ("status", "configured", "expected"),
    [
        pytest.param(
            {"tenant": "acme", "database": "db"}, True, Outcome(action=Uninstall("acme", "db")), id="installed"
        ),
        pytest.param(
            {"tenant": "acme"}, True, Outcome(action=Uninstall("acme", None)), id="installed-nowhere-recorded"
        ),
        pytest.param({}, True, Outcome(), id="never-installed"),
        pytest.param({"tenant": "acme", "database": "db"}, False, Outcome(), id="no-database-configured"),
    ],
)
def test_deleting_a_policy(status: dict[str, Any], configured: bool, expected: Outcome) -> None:
    assert policies.deleting(policy(**status), configured) == expected


def test_a_deletion_waits_for_an_unavailable_database_and_says_so() -> None:
    """The role must not outlive its policy: the deletion is retried (the handler sets no retry limit) and a
    Warning Event says why the policy has not gone yet."""
    outcome = policies.uninstall_failed("database unavailable")
    assert outcome.retry == Retry("database unavailable", 10)
    assert [(e.reason, e.warning) for e in outcome.events] == [("UninstallWaiting", True)]


def test_a_policy_deletion_is_retried_without_a_limit() -> None:
    import paybill.handlers.agentpolicy as handler

    registry = kopf.get_default_registry()
    deletions = [h for h in registry._changing.get_all_handlers() if h.fn is handler.delete_policy]  # type: ignore[attr-defined]
    assert deletions and all(h.retries is None for h in deletions)


def test_an_uninstalled_role_is_announced_and_recorded_only_when_dropped() -> None:
    installed = policy(tenant="acme", role="a_support")
    assert policies.uninstalled(installed, dropped=False) == Outcome()
    assert policies.uninstalled(installed, dropped=True) == Outcome(
        events=(Notice("Uninstalled", "role a_support dropped"),),
        audit=AuditRecord("AgentPolicy", "tenant-acme/support", "Uninstalled", {"tenant": "acme", "role": "a_support"}),
    )


# --- AgentWorkflow --------------------------------------------------------------------------------------------

WORKFLOW_SPEC = AgentWorkflowSpec.model_validate(
    {
        "principal": "agent:bot",
        "policyRef": "support",
        "steps": [
            {"name": "look", "kind": "query", "sql": "SELECT id FROM orders"},
            {"name": "fix", "kind": "mutation", "sql": "UPDATE orders SET status = 'ok' WHERE id = 1"},
        ],
    }
)
READY = {"phase": "Ready", "tenant": "acme", "access": "full"}
UNRUN_FIELDS = {"steps": [], "completedSteps": 0, "policyVersion": None, "resultsSecret": None}


def workflow(**status: Any) -> WorkflowObject:
    return WorkflowObject("wf", "tenant-acme", WORKFLOW_SPEC, AgentWorkflowStatus.model_validate(status))


def observed(policy_status: dict[str, Any] | None = READY, **rest: Any) -> workflows.Observed:
    """What the handler reads; the operator's records agree with the tenant's status unless `records` says."""
    view = None if policy_status is None else PolicyView(SPEC, AgentPolicyStatus.model_validate(policy_status))
    given = {"policy": view, "tenant": tenant(), "has_login": True, **rest}
    said = given["tenant"].status.database if given["tenant"] else None
    return workflows.Observed(**{"records": Records(said), **given})


def finish(phase: str, reason: str, message: str, fields: dict[str, Any]) -> tuple[Any, ...]:
    """What a finishing outcome says: its status and its one Event (a warning unless it succeeded)."""
    return (phase, phase == "Succeeded", reason, message, fields, ((reason, message, phase != "Succeeded"),))


def said(outcome: Outcome) -> tuple[Any, ...]:
    report = outcome.report
    assert report is not None and outcome.action is None and outcome.wait is None and outcome.retry is None
    events = tuple((n.reason, n.message, n.warning) for n in outcome.events)
    return (report.phase, report.ok, report.reason, report.message, report.written(), events)


@pytest.mark.parametrize("phase", ["Succeeded", "Denied", "Failed"])
def test_a_finished_workflow_is_left_alone(phase: str) -> None:
    assert workflows.settled(workflow(phase=phase)) == Outcome()
    assert workflows.decide(workflow(phase=phase), observed(None)) == Outcome()


def test_a_run_the_operator_was_interrupted_in_resumes_as_a_run_yet_to_run() -> None:
    """What committed is in the tenant's step records (workflows/run.py), never in status: a Running workflow is
    decided as a Pending one, and its run skips the steps recorded."""
    running = workflow(phase="Running", completedSteps=1)
    assert workflows.settled(running) is None
    assert workflows.decide(running, observed()) == workflows.decide(workflow(), observed())


@pytest.mark.parametrize("phase", [None, "Pending"])
def test_a_workflow_yet_to_run_is_not_settled(phase: str | None) -> None:
    assert workflows.settled(workflow(phase=phase)) is None


@pytest.mark.parametrize(
    ("status", "seen_", "expected"),
    [
        pytest.param(
            {}, observed(None), waiting("PolicyNotReady", "agentpolicy/support is missing", 5), id="policy-missing"
        ),
        pytest.param(
            {},
            observed({"phase": "Pending"}),
            waiting("PolicyNotReady", "agentpolicy/support is Pending", 5),
            id="policy-pending",
        ),
        pytest.param(
            {"phase": "Pending"},
            observed({"phase": "Invalid", "tenant": "acme"}),
            waiting("PolicyNotReady", "agentpolicy/support is Invalid", 5),
            id="policy-invalid",
        ),
        pytest.param(
            {},
            observed(READY, tenant=None),
            waiting("WaitingForTenant", "the tenant's database is not ready", 5),
            id="no-tenant",
        ),
        pytest.param(
            {},
            observed(READY, database_configured=False),
            waiting("WaitingForTenant", "the tenant's database is not ready", 5),
            id="no-database-configured",
        ),
        pytest.param(
            {},
            observed(READY, tenant=tenant(database=None)),
            waiting("WaitingForTenant", "the tenant's database is not ready", 5),
            id="tenant-without-data",
        ),
        pytest.param(
            {"phase": "Pending"},
            observed(READY),
            Outcome(action=LoadEngine("acme", PLACEMENT, SPEC, Access.FULL)),
            id="ready:-load-the-engine",
        ),
        pytest.param(
            {},
            observed({**READY, "access": "read_only"}, secret_conflict="squatted", has_login=False),
            Outcome(action=LoadEngine("acme", PLACEMENT, SPEC, Access.READ_ONLY)),
            id="the-engine-is-loaded-before-the-secrets-are-judged",
        ),
    ],
)
def test_workflow_decide(status: dict[str, Any], seen_: workflows.Observed, expected: Outcome) -> None:
    assert workflows.decide(workflow(**status), seen_) == expected


@pytest.mark.parametrize(
    ("records", "problem"),
    [
        (Records(None), "the operator has no record of where tenant acme's data is"),
        (Records(MOVED), "but the operator's record says"),
        (Records(PLACEMENT, retained_by="uid-earlier"), "retained by an earlier Tenant"),
    ],
    ids=["no-record", "another-place", "retained-by-another"],
)
def test_a_workflow_never_loads_its_engine_where_only_the_tenants_status_says_the_data_is(
    records: Records, problem: str
) -> None:
    """A forged Tenant status must not point the engine (its schema reads) at another tenant's database: the
    operator's own records decide, and a workflow waits while they disagree with status."""
    outcome = workflows.decide(workflow(), observed(READY, records=records))
    assert outcome.action is None and outcome.wait is not None
    assert outcome.wait.reason == "PlacementMismatch" and problem in outcome.wait.message


@pytest.mark.parametrize("access", [{"access": "none"}, {"access": None}], ids=["suspended", "no-recorded-access"])
def test_a_suspended_tenants_agents_are_denied_before_anything_runs(access: dict[str, Any]) -> None:
    message = "tenant acme is suspended; its agents cannot run"
    outcome = workflows.decide(workflow(), observed({**READY, **access}, tenant=None))
    assert said(outcome) == finish("Denied", "TenantSuspended", message, UNRUN_FIELDS)


LOAD = LoadEngine("acme", PLACEMENT, SPEC, Access.FULL)


@pytest.mark.parametrize(
    ("seen_", "failure", "expected"),
    [
        pytest.param(
            observed(),
            EngineFailure("database unavailable; will retry", invalid_policy=False),
            waiting("DatabaseUnavailable", "database unavailable; will retry", 5),
            id="database-unavailable",
        ),
        pytest.param(
            observed(secret_conflict="secret/agentworkflow-wf-results is not this AgentWorkflow's"),
            None,
            waiting("SecretConflict", "secret/agentworkflow-wf-results is not this AgentWorkflow's", 30),
            id="a-secret-the-run-uses-is-someone-elses",
        ),
        pytest.param(
            observed(has_login=False),
            None,
            waiting("CredentialsMissing", "secret/agent-support is not there yet", 5),
            id="no-login-yet",
        ),
        pytest.param(
            observed(secret_conflict="squatted", has_login=False),
            None,
            waiting("SecretConflict", "squatted", 30),
            id="a-conflict-before-a-missing-login",
        ),
        pytest.param(observed(), None, Outcome(action=RunSteps("acme", ("tenant-agent",))), id="run"),
    ],
)
def test_workflow_prepared(seen_: workflows.Observed, failure: EngineFailure | None, expected: Outcome) -> None:
    assert workflows.prepared(workflow(), seen_, LOAD, failure) == expected


@pytest.mark.parametrize("seen_", [observed(), observed(secret_conflict="squatted", has_login=False)])
def test_a_policy_that_no_longer_fits_the_schema_denies_the_workflow(seen_: workflows.Observed) -> None:
    outcome = workflows.prepared(workflow(), seen_, LOAD, EngineFailure("unknown column orders.nope", True))
    assert said(outcome) == finish("Denied", "InvalidPolicy", "unknown column orders.nope", UNRUN_FIELDS)


ALLOWED = Decision(True, "enforce", plan_hash="h1", sql="SELECT id FROM orders", statement="select")
REFUSED = Reason("no_allow_rule", "no rule allows update on orders.status", rule=None)


def ran(name: str, rows: int = 0) -> StepOutcome:
    return StepOutcome(name, ALLOWED, True, (), ("id",) if rows else (), [(n,) for n in range(rows)], 0 if rows else 1)


def denied(name: str) -> StepOutcome:
    return StepOutcome(name, Decision(False, "enforce", (REFUSED,)), reasons=(REFUSED,))


def errored(name: str) -> StepOutcome:
    reason = Reason("database_error", "SQLSTATE 23505 unique_violation")
    return StepOutcome(name, ALLOWED, reasons=(reason,), error='duplicate key value "secret"')


def step_statuses(*outcomes: StepOutcome) -> list[dict[str, Any]]:
    return [outcome.to_status() for outcome in outcomes]


@pytest.mark.parametrize(
    ("run", "expected"),
    [
        pytest.param(
            Run((ran("look", 3), ran("fix")), "v2", results=True),
            finish(
                "Succeeded",
                "Completed",
                "2 step(s) ran under policy version v2",
                {
                    "steps": step_statuses(ran("look", 3), ran("fix")),
                    "completedSteps": 2,
                    "policyVersion": "v2",
                    "resultsSecret": "agentworkflow-wf-results",
                },
            ),
            id="every-step-ran",
        ),
        pytest.param(
            Run((ran("fix"),), "v2", results=False),
            finish(
                "Succeeded",
                "Completed",
                "1 step(s) ran under policy version v2",
                {"steps": step_statuses(ran("fix")), "completedSteps": 1, "policyVersion": "v2", "resultsSecret": None},
            ),
            id="no-rows-no-results-secret",
        ),
        pytest.param(
            Run((ran("look", 1), denied("fix")), "v2", results=True),
            finish(
                "Denied",
                "StepDenied",
                "step fix: no_allow_rule: no rule allows update on orders.status; later steps were not run",
                {
                    "steps": step_statuses(ran("look", 1), denied("fix")),
                    "completedSteps": 1,
                    "policyVersion": "v2",
                    "resultsSecret": "agentworkflow-wf-results",
                },
            ),
            id="the-gate-refused-a-step",
        ),
        pytest.param(
            Run((errored("look"),), "v2", results=False),
            finish(
                "Failed",
                "StepFailed",
                "step look: database_error: SQLSTATE 23505 unique_violation; later steps were not run",
                {
                    "steps": step_statuses(errored("look")),
                    "completedSteps": 0,
                    "policyVersion": "v2",
                    "resultsSecret": None,
                },
            ),
            id="a-database-error-stopped-a-step",
        ),
        pytest.param(
            Run((StepOutcome("look", ALLOWED),), "v2", results=False),
            finish(
                "Denied",
                "StepDenied",
                "step look: did not run; later steps were not run",
                {
                    "steps": step_statuses(StepOutcome("look", ALLOWED)),
                    "completedSteps": 0,
                    "policyVersion": "v2",
                    "resultsSecret": None,
                },
            ),
            id="a-step-that-did-not-run-without-a-reason",
        ),
    ],
)
def test_how_a_run_finishes(run: Run, expected: tuple[Any, ...]) -> None:
    assert said(workflows.finished(workflow(phase="Running"), run)) == expected


def test_a_results_secret_squatted_during_the_run_is_warned_about_and_not_named() -> None:
    run = Run((ran("look", 2),), "v2", results=False, results_conflict="secret/agentworkflow-wf-results is not ours")
    outcome = workflows.finished(workflow(phase="Running"), run)
    phase, ok, reason, _, fields, events = said(outcome)
    assert (phase, ok, reason, fields["resultsSecret"]) == ("Succeeded", True, "Completed", None)
    assert events[0] == ("SecretConflict", "secret/agentworkflow-wf-results is not ours", True)
    assert events[1][0] == "Completed"


def test_progress_counts_the_steps_that_ran() -> None:
    status = workflows.progress([ran("look", 1), denied("fix")])
    assert workflows.status_fields(status) == {
        "phase": "Running",
        "steps": step_statuses(ran("look", 1), denied("fix")),
        "completedSteps": 1,
    }
    assert workflows.status_fields(AgentWorkflowStatus(phase="Running")) == {"phase": "Running"}


@pytest.mark.parametrize(
    ("outcome", "event"),
    [(ran("look", 1), "StepRan"), (denied("fix"), "StepDenied"), (errored("fix"), "StepFailed")],
)
def test_each_step_is_an_audit_record(outcome: StepOutcome, event: str) -> None:
    record = workflows.step_record(workflow(), outcome)
    assert (record.kind, record.name, record.event) == ("AgentWorkflow", "tenant-acme/wf", event)
    assert record.details == outcome.audit_details("agent:bot", "support")


def test_the_deciders_need_neither_a_database_nor_a_cluster() -> None:
    """Importing them (in a fresh interpreter) loads no database driver, no database code and no Kubernetes client."""
    script = (
        "import sys, paybill.lifecycle.agentpolicy, paybill.workflows.reconcile\n"
        "print('\\n'.join(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'kopf', 'kubernetes')"
        " or m.startswith('paybill.database')))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.split() == []
