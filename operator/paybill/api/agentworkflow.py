"""AgentWorkflow: the declared, typed steps an agent may run, and nothing else."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .meta import (
    AGE_COLUMN,
    LIST_ATOMIC,
    PHASE_COLUMN,
    CrdInfo,
    CustomResource,
    Model,
    PrinterColumn,
    Status,
    list_map,
)


class StepKind(StrEnum):
    QUERY = "query"
    MUTATION = "mutation"


class Step(Model):
    # 48: the approval annotation paybill.dev/approve-<step>.<who> keeps within the 63 characters of a key's name
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=48, description="Step name.")
    kind: StepKind = Field(description="query reads, mutation writes.")
    sql: str = Field(min_length=1, max_length=65536, description="The one SQL statement of the step.")
    params: list[str | int | float | bool | None] = Field(
        default_factory=list, json_schema_extra=LIST_ATOMIC, description="Positional parameters ($1, $2, ...)."
    )


class AgentWorkflowSpec(Model):
    principal: str = Field(pattern=r"^agent:[a-z0-9][-a-z0-9]*$", description="The agent running the workflow.")
    policyRef: str = Field(description="AgentPolicy (same namespace) the steps are checked against.")
    steps: list[Step] = Field(
        min_length=1,
        max_length=100,
        json_schema_extra=list_map("name"),
        description="Declared steps, unique by name, run in order.",
    )


class StepReason(Model):
    code: str = Field(description="Machine-readable reason, e.g. no_allow_rule, kind_mismatch, timeout.")
    message: str = Field(description="What was refused or went wrong.")
    rule: str | None = Field(default=None, description="The policy rule that decided, if one did.")
    position: int | None = Field(default=None, description="Offset of the offending node in the statement.")


class StepStatus(Model):
    name: str = Field(description="The step.")
    decision: str = Field(description="allow or deny, from the policy engine.")
    executed: bool = Field(default=False, description="Whether the statement ran (and committed).")
    reasons: list[StepReason] = Field(
        default_factory=list, json_schema_extra=LIST_ATOMIC, description="Why it was denied or did not finish."
    )
    rowsReturned: int = Field(
        default=0, ge=0, description="Rows a query returned (the rows are in the results Secret)."
    )
    rowsAffected: int = Field(default=0, ge=0, description="Rows a mutation changed.")
    planHash: str | None = Field(default=None, description="Fingerprint + parameters + policy version.")
    sql: str | None = Field(default=None, description="The rewritten statement that ran.")


class ApprovalStatus(Model):
    step: str = Field(description="The step waiting for approval.")
    planHash: str = Field(description="The plan hash to approve: paybill.dev/approve-<step>=<planHash>.")
    policyVersion: str | None = Field(default=None, description="The policy version the plan hash was computed under.")
    voided: list[str] = Field(
        default_factory=list,
        json_schema_extra=LIST_ATOMIC,
        description="Earlier plan hashes of the step: approvals of them are void (the policy or the schema changed).",
    )
    approvedBy: list[str] = Field(
        default_factory=list,
        json_schema_extra=LIST_ATOMIC,
        description="Who has approved the awaited plan hash so far (recorded approvals of it, e.g. user:alice).",
    )
    message: str = Field(default="", description="What is awaited, and how to approve or reject it.")


class AgentWorkflowStatus(Status):
    completedSteps: int = Field(default=0, ge=0, description="Steps run so far.")
    steps: list[StepStatus] = Field(
        default_factory=list, json_schema_extra=list_map("name"), description="One entry per step attempted, in order."
    )
    resultsSecret: str | None = Field(default=None, description="Secret holding the queries' rows (JSON per step).")
    policyVersion: str | None = Field(default=None, description="The policy version the steps were checked under.")
    approval: ApprovalStatus | None = Field(default=None, description="The approval the run waits for, if any.")
    resultsExpireAt: str | None = Field(
        default=None, description="When the results Secret is deleted (RFC 3339; the operator's retention period)."
    )


class AgentWorkflow(CustomResource):
    """A declared sequence of typed steps an agent submits for gated execution."""

    crd = CrdInfo(
        kind="AgentWorkflow",
        plural="agentworkflows",
        singular="agentworkflow",
        namespaced=True,
        short_names=("awf",),
        description="AgentWorkflow is a declared sequence of typed SQL steps run through the agent gate.",
        printer_columns=(
            PrinterColumn("Principal", ".spec.principal"),
            PHASE_COLUMN,
            PrinterColumn("Steps", ".status.completedSteps", type="integer"),
            AGE_COLUMN,
        ),
    )
    spec: AgentWorkflowSpec
    status: AgentWorkflowStatus | None = None
