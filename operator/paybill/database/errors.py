"""What the tenant data layer raises; callers retry `DatabaseUnavailable` and report the others."""

from __future__ import annotations


class DatabaseUnavailable(RuntimeError):
    """The tenant database could not be reached; the caller retries later."""


class UnsafeBackupDirectory(DatabaseUnavailable):
    """The backup directory is not private to the operator; nothing is written until it is."""


class MigrationError(RuntimeError):
    """A migration between isolation models did not verify; nothing was cut over."""
