"""Thin kopf handlers: `kopf run -m paybill.handlers` (or `paybill operator`) registers them all."""

from . import (
    admission,
    agentpolicy,
    agentworkflow,
    infrastructure,
    instrument,
    orphans,
    plan,
    repair,
    sessions,
    settings,
    subscription,
    tenant,
)

__all__ = [
    "admission",
    "agentpolicy",
    "agentworkflow",
    "infrastructure",
    "instrument",
    "orphans",
    "plan",
    "repair",
    "sessions",
    "settings",
    "subscription",
    "tenant",
]
