"""Thin kopf handlers: `kopf run -m paybill.handlers` (or `paybill operator`) registers them all."""

from . import agentpolicy, agentworkflow, catalog, repair, sessions, settings, tenant

__all__ = ["agentpolicy", "agentworkflow", "catalog", "repair", "sessions", "settings", "tenant"]
