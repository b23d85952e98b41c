"""Orphans, decided: what a look for resources of tenants that no longer exist reports on the Plan, and when it is
said again as a Warning Event. Pure: handlers/orphans.py lists the tenants, asks the adapter and writes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..api.plan import ORPHANS_LISTED, OrphanReport
from .model import Resource

REASON = "OrphanedResources"
FAILED_REASON = "OrphanCheckFailed"


def report(found: Sequence[Resource], checked_at: str) -> OrphanReport:
    """The orphans found, the first ORPHANS_LISTED of them named (sorted, so one finding always reads the same)."""
    ordered = sorted(found, key=lambda r: (r.tenant, r.kind, r.id))
    tenants = sorted({r.tenant for r in ordered})
    return OrphanReport(
        checkedAt=checked_at,
        count=len(ordered),
        tenants=tenants[:ORPHANS_LISTED],
        resources=[f"{r.kind} {r.id} (tenant {r.tenant})" for r in ordered[:ORPHANS_LISTED]],
    )


def failed(error: str, checked_at: str) -> OrphanReport:
    return OrphanReport(checkedAt=checked_at, error=error)


def warning(now: OrphanReport, before: Mapping[str, Any] | None) -> str | None:
    """The Warning Event's message when the finding is new or changed (None: nothing new to say)."""
    if now.error is not None:
        return None if before is not None and before.get("error") == now.error else now.error
    if now.count == 0:
        return None
    if before is not None and (before.get("count"), before.get("resources")) == (now.count, now.resources):
        return None
    more = f" and {now.count - len(now.resources)} more" if now.count > len(now.resources) else ""
    return (
        f"{now.count} resource(s) tagged with tenants that no longer exist keep costing money: "
        f"{', '.join(now.resources)}{more}"
    )
