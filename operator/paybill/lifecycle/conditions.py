"""Standard Kubernetes conditions, kept stable: lastTransitionTime moves only when the status does."""

from __future__ import annotations

from typing import Any

from ..api.meta import now_rfc3339


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: bool | None,
    reason: str,
    message: str,
    generation: int | None = None,
) -> list[dict[str, Any]]:
    value = "Unknown" if status is None else "True" if status else "False"
    previous = next((c for c in conditions if c.get("type") == type_), None)
    unchanged = previous is not None and previous.get("status") == value
    condition = {
        "type": type_,
        "status": value,
        "reason": reason,
        "message": message,
        "lastTransitionTime": previous.get("lastTransitionTime", now_rfc3339())
        if unchanged and previous
        else now_rfc3339(),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return [c for c in conditions if c.get("type") != type_] + [condition]


def is_true(conditions: list[dict[str, Any]], type_: str) -> bool:
    return any(c.get("type") == type_ and c.get("status") == "True" for c in conditions)
