"""Tamper-evident audit records: every lifecycle transition and every agent decision, chained, checkpointed
outside the database, and kept in memory while the database is unreachable."""

from .chain import AuditRecord, ChainBroken, Head, RecordsMissing
from .checkpoint import CheckpointStore, CheckpointUnavailable, ConfigMapCheckpoint, FileCheckpoint
from .log import AuditLog, AuditUnavailable

__all__ = [
    "AuditLog",
    "AuditRecord",
    "AuditUnavailable",
    "ChainBroken",
    "CheckpointStore",
    "CheckpointUnavailable",
    "ConfigMapCheckpoint",
    "FileCheckpoint",
    "Head",
    "RecordsMissing",
]
