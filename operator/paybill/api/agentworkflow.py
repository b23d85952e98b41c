"""AgentWorkflow: the declared, typed steps an agent may run, and nothing else."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .meta import AGE_COLUMN, PHASE_COLUMN, CrdInfo, CustomResource, Model, PrinterColumn, Status


class StepKind(StrEnum):
    QUERY = "query"
    MUTATION = "mutation"


class Step(Model):
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Step name.")
    kind: StepKind = Field(description="query reads, mutation writes.")
    sql: str = Field(min_length=1, max_length=65536, description="The one SQL statement of the step.")
    params: list[str | int | float | bool | None] = Field(default_factory=list,
                                                          description="Positional parameters ($1, $2, ...).")


class AgentWorkflowSpec(Model):
    principal: str = Field(pattern=r"^agent:[a-z0-9][-a-z0-9]*$", description="The agent running the workflow.")
    policyRef: str = Field(description="AgentPolicy (same namespace) the steps are checked against.")
    steps: list[Step] = Field(min_length=1, max_length=100, description="Declared steps, run in order.")


class AgentWorkflowStatus(Status):
    completedSteps: int = Field(default=0, ge=0, description="Steps run so far.")


class AgentWorkflow(CustomResource):
    """A declared sequence of typed steps an agent submits for gated execution."""

    crd = CrdInfo(
        kind="AgentWorkflow", plural="agentworkflows", singular="agentworkflow", namespaced=True,
        short_names=("awf",),
        description="AgentWorkflow is a declared sequence of typed SQL steps run through the agent gate.",
        printer_columns=(PrinterColumn("Principal", ".spec.principal"), PHASE_COLUMN,
                         PrinterColumn("Steps", ".status.completedSteps", type="integer"), AGE_COLUMN),
    )
    spec: AgentWorkflowSpec
    status: AgentWorkflowStatus | None = None
