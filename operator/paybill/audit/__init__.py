"""Tamper-evident audit records: every lifecycle transition and every agent decision."""

from .log import AuditLog, AuditRecord, ChainBroken

__all__ = ["AuditLog", "AuditRecord", "ChainBroken"]
