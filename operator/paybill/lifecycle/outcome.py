"""What a pure reconcile decides, as data its kopf handler applies: the Ready condition, the Events to post, the
objects to nudge into reconciling again, and when to look again. Free of I/O."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError


@dataclass(frozen=True)
class Readiness:
    """The Ready condition's fields (None: Unknown)."""

    ok: bool | None
    reason: str
    message: str


@dataclass(frozen=True)
class Notice:
    """A Kubernetes Event about the reconciled object."""

    reason: str
    message: str
    warning: bool = False


@dataclass(frozen=True)
class Touch:
    """Annotate a Paybill object so that its own reconcile runs again."""

    plural: str
    name: str
    key: str
    value: str


@dataclass(frozen=True)
class InvalidSpec:
    """A spec its model refused, with one line naming every field at fault."""

    message: str

    @classmethod
    def of(cls, error: ValidationError) -> InvalidSpec:
        return cls("; ".join(f"spec.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()))


Said = tuple[str | None, str | None]  # the (reason, message) a condition said last time


def said(status: Mapping[str, Any] | None, type_: str = "Ready") -> Said:
    """What the object's condition of this type says now (None, None when it has none)."""
    conditions: list[Mapping[str, Any]] = (status or {}).get("conditions") or []
    condition: Mapping[str, Any] = next((c for c in conditions if c.get("type") == type_), {})
    return condition.get("reason"), condition.get("message")


def warn_once(previous: Said, reason: str, message: str) -> tuple[Notice, ...]:
    """A Warning Event when the problem is new, not on every retry."""
    return () if previous == (reason, message) else (Notice(reason, message, warning=True),)
