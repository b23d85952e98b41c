"""Thin kopf handlers: `kopf run -m paybill.handlers` (or `paybill operator`) registers them all."""

from . import agentpolicy, agentworkflow, infrastructure, plan, repair, sessions, settings, subscription, tenant

__all__ = [
    "agentpolicy",
    "agentworkflow",
    "infrastructure",
    "plan",
    "repair",
    "sessions",
    "settings",
    "subscription",
    "tenant",
]
