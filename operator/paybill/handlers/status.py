"""Status writing shared by the handlers: phase, observed generation and a Ready condition."""

from __future__ import annotations

from typing import Any

import kopf

from ..lifecycle.conditions import set_condition


def write_ready(body: kopf.Body, patch: kopf.Patch, phase: str, ok: bool | None, reason: str, message: str,
                **fields: Any) -> None:
    generation = body.metadata.get("generation")
    conditions = set_condition(list((body.get("status") or {}).get("conditions") or []), "Ready", ok, reason,
                               message, generation)
    patch.status.update(phase=phase, observedGeneration=generation, conditions=conditions, **fields)
