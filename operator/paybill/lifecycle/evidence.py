"""A placement read from a Tenant's status is evidence, never an order: it is used only where the operator's own
records bear it out. Pure.

The chart lets only the operator write tenants/status, but a name Paybill did not create is never trusted: anyone
who can write status could name another tenant's database there. The operator gives each tenant fixed names under
each isolation model (`placement_at` over its keyed role name), records what it created for whom, and records where
each tenant is placed. Status is held against those; a mismatch is refused with a condition and an Event that name
it, and nothing is installed, granted, made or removed at the place status named.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..api.tenant import Access, DatabasePlacement

if TYPE_CHECKING:
    from ..database.placement import Placement


class PlacementMismatch(RuntimeError):
    """A Tenant's status names a placement the operator's own records do not bear out."""


@dataclass(frozen=True)
class Refused:
    """Why a placement read from status is not used."""

    message: str


@dataclass(frozen=True)
class Holdings:
    """What the operator's own records say of a tenant whose placement record is lost: the placement its names give
    it under each isolation model, whether its role is the one Paybill created for it, and the isolation models under
    which data of its is there (a database or schema Paybill created for it, or its pooled row mapping)."""

    expected: Mapping[str, Placement]
    role_owned: bool
    holding: Collection[str] = ()


@dataclass(frozen=True)
class Records:
    """The operator's records of a tenant's data, for an AgentPolicy: where it is placed (None: no record), the
    uid of an earlier Tenant of the name that kept its data when it was offboarded (deletionPolicy retain), and
    what the tenant's role may do there as the database has it (None: not read, which grants nothing)."""

    placement: DatabasePlacement | None
    retained_by: str | None = None
    access: Access | None = None


ACCESS_ORDER = (Access.NONE, Access.READ_ONLY, Access.FULL)


def least_access(*given: Access | None) -> Access:
    """The least of the accesses given; one not known (None) is none."""
    return min((a or Access.NONE for a in given), key=ACCESS_ORDER.index)


def describe(placement: DatabasePlacement) -> str:
    return (
        f"{placement.isolation} data in database {placement.database}, schema {placement.schema_}, "
        f"role {placement.role}"
    )


def same_place(a: DatabasePlacement, b: DatabasePlacement) -> bool:
    return (a.isolation, a.database, a.schema_, a.role) == (b.isolation, b.database, b.schema_, b.role)


def recovered_placement(tenant: str, said: DatabasePlacement, seen: Holdings) -> Placement | Refused | None:
    """Where a tenant's data is, its placement record being lost, given what its status said: that placement when
    it is the one the operator gives the tenant under that isolation model, its role is the tenant's, and the
    tenant's data is there and nowhere else. None when nothing of the tenant's is left (no role, no data: the data
    was removed). Anything else is refused: making the record again from it would grant, move or remove at a place
    status named (another tenant's data, or a stale place whose emptiness a move would copy over the rows)."""
    if not seen.role_owned and not seen.holding:
        return None
    expected = seen.expected.get(said.isolation)
    if expected is None or not same_place(said, expected.to_model()):
        wanted = f"; its {said.isolation} placement is {describe(expected.to_model())}" if expected else ""
        return Refused(f"status says {describe(said)}, which is not where Paybill places tenant {tenant}{wanted}")
    if not seen.role_owned:
        return Refused(f"status names role {said.role}, which is not the one Paybill created for tenant {tenant}")
    if set(seen.holding) != {said.isolation}:
        found = ", ".join(sorted(seen.holding)) or "none"
        return Refused(
            f"status says the data is {said.isolation}, but tenant {tenant}'s data is found under: {found}; "
            "its placement record is lost, and status alone does not say which is current"
        )
    return expected


def agent_placement_problem(tenant: str, uid: str, said: DatabasePlacement, records: Records) -> str | None:
    """Why an AgentPolicy may not be installed where the Tenant's status says its data is (None: it may): the
    data under the name is an earlier Tenant's, the operator has no record of the placement, or its record says
    otherwise."""
    if records.retained_by not in (None, uid):
        return (
            f"the data under the name {tenant} was retained by an earlier Tenant (uid {records.retained_by}); "
            "it is not this Tenant's"
        )
    if records.placement is None:
        return f"the operator has no record of where tenant {tenant}'s data is; status alone ({describe(said)}) is none"
    if not same_place(said, records.placement):
        return f"status says {describe(said)}, but the operator's record says {describe(records.placement)}"
    return None
