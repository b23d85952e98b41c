"""Pydantic models of every Paybill CRD: the single source of truth for crds/."""

from .agentpolicy import AgentPolicy
from .agentworkflow import AgentWorkflow
from .meta import API_VERSION, GROUP, VERSION, Condition, CustomResource, Status
from .plan import Plan
from .subscription import Subscription
from .tenant import Tenant

RESOURCES: tuple[type[CustomResource], ...] = (Plan, Subscription, Tenant, AgentPolicy, AgentWorkflow)

__all__ = [
    "API_VERSION",
    "GROUP",
    "RESOURCES",
    "VERSION",
    "AgentPolicy",
    "AgentWorkflow",
    "Condition",
    "CustomResource",
    "Plan",
    "Status",
    "Subscription",
    "Tenant",
]
