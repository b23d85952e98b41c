"""Status writing shared by the handlers: phase, observed generation and a Ready condition."""

from __future__ import annotations

from typing import Any, NoReturn

import kopf

from ..lifecycle.conditions import set_condition
from . import events


def write_ready(
    body: kopf.Body, patch: kopf.Patch, phase: str, ok: bool | None, reason: str, message: str, **fields: Any
) -> None:
    generation = body.metadata.get("generation")
    conditions = set_condition(
        list((body.get("status") or {}).get("conditions") or []), "Ready", ok, reason, message, generation
    )
    patch.status.update(phase=phase, observedGeneration=generation, conditions=conditions, **fields)


def wait_for(body: kopf.Body, patch: kopf.Patch, reason: str, message: str, delay: float) -> NoReturn:
    """Pending until something else is ready: said in status, once as a Warning Event, and retried."""
    conditions = (body.get("status") or {}).get("conditions") or []
    if next((c.get("reason") for c in conditions if c.get("type") == "Ready"), None) != reason:
        events.warn(body, reason=reason, message=message)
    write_ready(body, patch, "Pending", False, reason, message)
    raise kopf.TemporaryError(message, delay=delay)
