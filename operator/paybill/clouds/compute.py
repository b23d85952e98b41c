"""A tenant's compute, decided: a silo or bridge tenant's instances are stopped while it is Suspended and started
when it resumes, through its plan's cloud adapter. Pure: lifecycle/reconcile.py asks for the PowerCompute action
this returns, handlers/compute.py carries it out and records the result in status.compute, which the next decision
reads (so a done change is not asked again: idempotent, and each adapter's suspend/resume is idempotent too)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ..api.plan import Cloud, Isolation, PlanSpec
from ..api.tenant import ComputeStatus
from .model import PowerState, Resource

STOPPED, RUNNING = "stopped", "running"
DONE, FAILED = "Done", "Failed"
CONDITION = "Compute"
UP = frozenset({PowerState.RUNNING, PowerState.STARTING})  # costing money: what a suspended tenant must not have


@dataclass(frozen=True)
class PowerCompute:
    """Stop (wanted "stopped") or start ("running") every instance of the tenant's plan's cloud tagged for it."""

    wanted: str


@dataclass(frozen=True)
class ComputeDecision:
    actions: tuple[PowerCompute, ...] = ()
    condition: tuple[bool, str, str] | None = None  # the Compute condition (None: the tenant has no cloud compute)


def decide_compute(
    plan: PlanSpec, suspended: bool, provisioned: bool, recorded: ComputeStatus | None
) -> ComputeDecision:
    """`suspended`: the tenant's goal is Suspended; `provisioned`: its infrastructure is applied (nothing to stop
    before that); `recorded`: status.compute, what the adapter last did."""
    provisioning = plan.provisioning
    if provisioning is None or provisioning.cloud == Cloud.LOCAL or plan.isolation == Isolation.POOLED:
        return ComputeDecision()
    wanted = STOPPED if suspended else RUNNING
    if not provisioned:
        return ComputeDecision()
    if recorded is None and not suspended:  # as built: running, nothing was ever stopped
        return ComputeDecision()
    if recorded is not None and recorded.wanted == wanted and recorded.result == DONE:
        count = len(recorded.changed) + len(recorded.unchanged)
        return ComputeDecision(condition=(True, wanted.capitalize(), f"{count} instance(s) {wanted}"))
    verb = "stopping" if suspended else "starting"
    if recorded is not None and recorded.wanted == wanted and recorded.result == FAILED:
        why = (False, "PowerFailed", f"{verb} the instances failed, tried again: {recorded.message}")
        return ComputeDecision((PowerCompute(wanted),), why)
    return ComputeDecision((PowerCompute(wanted),), (False, verb.capitalize(), f"{verb} the tenant's instances"))


# What suspension stops: instances, and the databases an adapter lists (AWS RDS, which AWS itself starts again
# after seven days stopped)
POWERED = frozenset({"instance", "database"})


def strays(suspended: bool, recorded: ComputeStatus | None, found: Iterable[Resource]) -> tuple[str, ...]:
    """The tenant's instances up while it stays Suspended after its instances were stopped (started by hand, or by
    anything but the operator): the periodic check stops them again. None before the suspension's stop is done (the
    reconcile does that, and retries a failure) and none once the tenant resumes (`suspended`: its phase now)."""
    if not suspended or recorded is None or recorded.wanted != STOPPED or recorded.result != DONE:
        return ()
    return tuple(sorted(r.id for r in found if r.kind in POWERED and r.state in UP))
