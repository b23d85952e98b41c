"""Thin kopf handlers: `kopf run -m paybill.handlers` (or `paybill operator`) registers them all."""

from . import agentpolicy, catalog, repair, settings, tenant

__all__ = ["agentpolicy", "catalog", "repair", "settings", "tenant"]
