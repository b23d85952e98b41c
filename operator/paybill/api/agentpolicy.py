"""AgentPolicy: the explicit access-control list an AI agent's SQL is checked against."""

from __future__ import annotations

from enum import StrEnum

from pydantic import Field

from .meta import (
    AGE_COLUMN,
    LIST_SET,
    READY_COLUMN,
    CrdInfo,
    CustomResource,
    Model,
    PrinterColumn,
    Status,
    list_map,
)
from .tenant import Access

IDENT = r"^([A-Za-z_][A-Za-z0-9_$]*|\*)$"
AGENT_NAME = r"^agent:[a-z0-9][-a-z0-9]*$"
MAX_RULES = 256


class PolicyMode(StrEnum):
    ENFORCE = "enforce"
    WARN = "warn"
    AUDIT = "audit"


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"


class Action(StrEnum):
    SELECT = "select"
    INSERT = "insert"
    UPDATE = "update"
    DELETE = "delete"


class Approval(Model):
    approvers: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="Principals who may approve."
    )
    minApprovals: int = Field(default=1, ge=1, le=10, description="Approvals needed before the statement runs.")


class Rule(Model):
    id: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Unique rule id.")
    effect: Effect = Field(description="allow or deny; deny wins over allow.")
    actions: list[Action] = Field(
        min_length=1, json_schema_extra=LIST_SET, description="Statement kinds the rule covers."
    )
    tables: list[str] = Field(
        min_length=1, json_schema_extra=LIST_SET, description="Tables the rule covers; * for all."
    )
    columns: list[str] = Field(
        default_factory=lambda: ["*"], json_schema_extra=LIST_SET, description="Columns the rule covers; * for all."
    )
    requireWhere: bool = Field(default=False, description="Refuse UPDATE/DELETE without a WHERE clause.")
    rowFilter: str | None = Field(
        default=None, max_length=4096, description="SQL predicate added to every statement the rule admits."
    )
    approval: Approval | None = Field(default=None, description="Human approval needed before execution.")


class Subject(Model):
    """An agent: the ServiceAccount the API server authenticates, and the name its workflows run under."""

    serviceAccount: str = Field(
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
        max_length=253,
        description="A ServiceAccount in the policy's namespace: the agent's identity, as the API server says it.",
    )
    agent: str = Field(
        pattern=AGENT_NAME,
        max_length=63,
        description="The agent's display name (an AgentWorkflow's spec.principal), bound to this one ServiceAccount.",
    )


class Limits(Model):
    maxRowsRead: int = Field(default=1000, ge=1, description="Rows a statement may return.")
    maxBytesRead: int = Field(
        default=16 * 1024 * 1024,
        ge=1,
        le=1024 * 1024 * 1024,
        description="Bytes a statement may return: its values' lengths as the server sends them, plus 128 bytes per "
        "value and 64 per row (what the operator holds for each). Past it, the statement is stopped and rolled back "
        "and none of its rows are kept.",
    )
    maxRowsWritten: int = Field(default=10, ge=0, description="Rows a statement may change.")
    statementTimeoutMs: int = Field(default=2000, ge=1, le=600000, description="Statement timeout.")
    maxCost: float = Field(default=100000, gt=0, description="Highest planner cost admitted.")
    maxStatementsPerRun: int = Field(default=50, ge=1, description="Statements one workflow run may issue.")


class AgentPolicySpec(Model):
    subjects: list[Subject] = Field(
        min_length=1,
        max_length=64,
        json_schema_extra=list_map("agent"),
        description="The agents the policy applies to: each display name bound to one ServiceAccount of the "
        "namespace (a workflow is admitted only from the ServiceAccount its principal is bound to).",
    )
    mode: PolicyMode = Field(
        default=PolicyMode.ENFORCE, description="enforce denies; warn and audit allow but record what would be denied."
    )
    rules: list[Rule] = Field(
        max_length=MAX_RULES,
        json_schema_extra=list_map("id"),
        description="Ordered rules, unique by id; no matching allow means deny (an empty list denies everything).",
    )
    functions: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="SQL functions agents may call."
    )
    limits: Limits = Field(default_factory=Limits, description="Hard limits per statement and per run.")


class AgentPolicyStatus(Status):
    tenant: str | None = Field(default=None, description="The tenant whose data the policy governs.")
    role: str | None = Field(default=None, description="The agent's PostgreSQL login role.")
    database: str | None = Field(default=None, description="The database the role's grants live in.")
    schema_: str | None = Field(default=None, alias="schema", description="The schema the grants cover.")
    tables: list[str] = Field(
        default_factory=list, json_schema_extra=LIST_SET, description="Tables the role holds any privilege on."
    )
    access: Access | None = Field(
        default=None,
        description="The tenant's access the grants follow: full, read_only (writes dropped) or none (no login).",
    )
    policyVersion: str | None = Field(default=None, description="Digest of the policy and the live schema.")
    credentialsSecret: str | None = Field(default=None, description="Secret with the role's login.")


class AgentPolicy(CustomResource):
    """The explicit ACL for agents acting on one tenant's data."""

    crd = CrdInfo(
        kind="AgentPolicy",
        plural="agentpolicies",
        singular="agentpolicy",
        namespaced=True,
        short_names=("apol",),
        description="AgentPolicy is the explicit access-control list an AI agent's SQL is checked against.",
        printer_columns=(
            PrinterColumn("Mode", ".spec.mode"),
            PrinterColumn("Tenant", ".status.tenant"),
            PrinterColumn("Access", ".status.access"),
            PrinterColumn("Role", ".status.role", priority=1),
            PrinterColumn("Rules", ".spec.rules", type="string", priority=1),
            READY_COLUMN,
            AGE_COLUMN,
        ),
    )
    spec: AgentPolicySpec
    status: AgentPolicyStatus | None = None
