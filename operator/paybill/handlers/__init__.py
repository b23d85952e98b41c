"""Thin kopf handlers: `kopf run -m paybill.handlers` (or `paybill operator`) registers them all."""

from . import catalog, settings, tenant

__all__ = ["catalog", "settings", "tenant"]
