"""Thin kopf handlers: `kopf run -m paybill.handlers` (or `paybill operator`) registers them all."""

from . import catalog, repair, settings, tenant

__all__ = ["catalog", "repair", "settings", "tenant"]
