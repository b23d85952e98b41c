"""What the agent reconcilers (AgentPolicy, AgentWorkflow) decide, as data their kopf handlers apply: the status
to write, the wait to report, the Events to post, the audit record to append, and the action to carry out.
Free of I/O; the deciders are lifecycle/agentpolicy.py and workflows/reconcile.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api.meta import Status
from .outcome import Notice


@dataclass(frozen=True)
class Report:
    """Status to write: the phase, the Ready condition, and the model's fields this reconcile sets (the fields set
    on `fields` only: a field set to None is removed, one left unset is left as it is)."""

    phase: str
    ok: bool | None
    reason: str
    message: str
    fields: Status

    def written(self) -> dict[str, Any]:
        """The fields as the status stores them (by their wire names)."""
        return self.fields.model_dump(
            mode="json", by_alias=True, exclude_unset=True, exclude={"phase", "observedGeneration", "conditions"}
        )


@dataclass(frozen=True)
class Wait:
    """Pending until something else is ready: said in status, a Warning Event when the reason is new, retried."""

    reason: str
    message: str
    delay: float


@dataclass(frozen=True)
class Retry:
    """Look again in `delay` seconds (after whatever else the outcome says)."""

    message: str
    delay: float


@dataclass(frozen=True)
class AuditRecord:
    """An entry for the hash-chained audit log."""

    kind: str
    name: str
    event: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Outcome:
    """Carry out `action` (if any; what it finds decides the next outcome), else: write `report`, or `wait`; post
    `events`; append `audit`; then, if `retry` is set, look again."""

    action: object | None = None
    report: Report | None = None
    wait: Wait | None = None
    events: tuple[Notice, ...] = ()
    audit: AuditRecord | None = None
    retry: Retry | None = None
