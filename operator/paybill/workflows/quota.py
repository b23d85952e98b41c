"""A tenant's agent statements per UTC day (Plan quotas.agentStatementsPerDay): what admission charges. Pure.

The count is durable and charged once, at admission (handlers/stamping.py, a conditional UPDATE in the operator's
control database, database/control.py): deleting a workflow gives nothing back, two submissions at once cannot both
pass the last slot, and a new UTC day starts a new count. Admission cannot know whether the API server then stores
the object (a later webhook or the storage may still fail), so a create refused after admission is still counted.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass


@dataclass(frozen=True)
class StatementCharge:
    """What an admitted create adds to its tenant's day: its declared steps, against the plan's daily limit."""

    tenant: str
    statements: int
    limit: int
    plan: str


def utc_day(now: datetime.datetime) -> datetime.date:
    """The UTC day a charge counts in (`now` must know its time zone: a naive time is refused)."""
    if now.tzinfo is None:
        raise ValueError("the quota's clock must be time-zone aware")
    return now.astimezone(datetime.UTC).date()


def over_quota(charge: StatementCharge, used: int, day: datetime.date) -> str:
    """Why the charge is refused, `used` being the day's count before it."""
    return (
        f"{used} agent statements were admitted on {day.isoformat()} (UTC) and this workflow adds "
        f"{charge.statements}; plan {charge.plan} allows {charge.limit} a day"
    )
