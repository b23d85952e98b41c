"""Tables for what the operator makes of evidence it did not write itself: a placement in a Tenant's status (held
against its own names and records), a claim on data retained under a name, and the marks a backfill gives data
retained before the mark existed. Pure: no cluster, no database."""

from __future__ import annotations

import pytest

from paybill.api.agentpolicy import AgentPolicySpec
from paybill.api.plan import Isolation
from paybill.api.tenant import ADOPT_RETAINED_DATA, DatabasePlacement, TenantStatus
from paybill.database.control import NameClaim, name_claim
from paybill.database.placement import BRIDGE_DATABASE, Placement, placement_at
from paybill.lifecycle import agentpolicy as policies
from paybill.lifecycle.evidence import Holdings, Records, Refused, agent_placement_problem, recovered_placement

ROLE = "t_acme"
EXPECTED = {str(isolation): placement_at("acme", isolation, ROLE) for isolation in Isolation}
SILO, BRIDGE, POOLED = (EXPECTED[str(i)] for i in (Isolation.SILO, Isolation.BRIDGE, Isolation.POOLED))
OTHERS_SILO = placement_at("globex", Isolation.SILO, "t_globex").to_model()


def said(placement: Placement | DatabasePlacement, **changes: str) -> DatabasePlacement:
    model = placement.to_model() if isinstance(placement, Placement) else placement
    return model.model_copy(update=changes)


def holdings(*holding: str, role_owned: bool = True) -> Holdings:
    return Holdings(EXPECTED, role_owned, frozenset(holding))


@pytest.mark.parametrize(
    ("status", "seen", "expected"),
    [
        pytest.param(said(SILO), holdings("silo"), SILO, id="status-bears-out"),
        pytest.param(said(POOLED), holdings("pooled"), POOLED, id="pooled-bears-out"),
        pytest.param(said(SILO), holdings(role_owned=False), None, id="nothing-left-the-data-was-removed"),
        pytest.param(said(OTHERS_SILO, role=ROLE), holdings("silo"), "not where Paybill places", id="another-db"),
        pytest.param(said(BRIDGE, schema_="t_globex"), holdings("bridge"), "not where Paybill places", id="schema"),
        pytest.param(said(SILO, role="t_globex"), holdings("silo"), "not where Paybill places", id="another-role"),
        pytest.param(said(SILO, isolation="moon"), holdings("silo"), "not where Paybill places", id="isolation"),
        pytest.param(said(BRIDGE), holdings("silo"), "found under: silo", id="stale-status"),
        pytest.param(said(BRIDGE), holdings(), "found under: none", id="role-but-no-data"),
        pytest.param(said(BRIDGE), holdings("bridge", "silo"), "does not say which", id="mid-move"),
        pytest.param(said(SILO), holdings("silo", role_owned=False), "not the one Paybill created", id="foreign-role"),
    ],
)
def test_a_lost_record_is_made_again_only_where_the_operators_records_bear_status_out(
    status: DatabasePlacement, seen: Holdings, expected: Placement | str | None
) -> None:
    found = recovered_placement("acme", status, seen)
    if isinstance(expected, str):
        assert isinstance(found, Refused) and expected in found.message, found
        assert status.database in found.message or status.isolation in found.message
    else:
        assert found == expected


@pytest.mark.parametrize(
    ("status", "records", "uid", "problem"),
    [
        (said(SILO), Records(said(SILO)), "u1", None),
        (said(SILO), Records(said(SILO), retained_by="u1"), "u1", None),  # its own retained data (never installed)
        (said(SILO), Records(said(SILO), retained_by="u0"), "u1", "retained by an earlier Tenant (uid u0)"),
        (said(SILO), Records(None), "u1", "no record of where tenant acme's data is"),
        (said(OTHERS_SILO), Records(said(SILO)), "u1", f"but the operator's record says silo data in database {ROLE}"),
        (said(BRIDGE), Records(said(SILO)), "u1", "status says bridge data in database " + BRIDGE_DATABASE),
    ],
)
def test_an_agent_is_installed_only_where_the_placement_record_says(
    status: DatabasePlacement, records: Records, uid: str, problem: str | None
) -> None:
    found = agent_placement_problem("acme", uid, status, records)
    assert found == problem if problem is None else (found is not None and problem in found)


SPEC = AgentPolicySpec.model_validate(
    {
        "subjects": [{"serviceAccount": "tenant-agent", "agent": "agent:a"}],
        "rules": [{"id": "r", "effect": "allow", "actions": ["select"], "tables": ["orders"]}],
    }
)


def test_a_policy_on_a_tenant_whose_status_the_record_does_not_bear_out_is_a_conflict_never_installed() -> None:
    tenant = policies.TenantView("acme", TenantStatus(phase="Active", access="full", database=OTHERS_SILO), "u1")
    policy = policies.PolicyObject("support", "tenant-acme", SPEC)
    outcome = policies.decide(policy, policies.Observed(tenant, records=Records(said(SILO))))
    assert outcome.action is None and outcome.report is not None
    assert (outcome.report.phase, outcome.report.reason) == ("Conflict", "PlacementMismatch")
    assert [(n.reason, n.warning) for n in outcome.events] == [("PlacementMismatch", True)]
    installed = policies.decide(policy, policies.Observed(tenant, records=Records(OTHERS_SILO)))
    assert isinstance(installed.action, policies.Install) and installed.action.placement == OTHERS_SILO
    unread = policies.decide(policy, policies.Observed(tenant))  # no record read: never installed
    assert unread.action is None and unread.report is not None and unread.report.reason == "PlacementMismatch"


@pytest.mark.parametrize(
    ("retained_by", "uid", "adopt", "expected"),
    [
        (None, "new", None, NameClaim()),
        (None, "new", "old", NameClaim()),  # nothing retained: the annotation changes nothing
        ("old", "old", None, NameClaim()),  # the Tenant that kept it
        ("old", "new", "old", NameClaim(adopts="old")),
        ("old", "new", None, f"{ADOPT_RETAINED_DATA}=old"),  # refused, and told how to adopt
        ("old", "new", "other", "names another Tenant"),
        ("old", "new", "", f"{ADOPT_RETAINED_DATA}=old"),
    ],
)
def test_retained_data_goes_to_a_new_tenant_only_when_it_names_the_tenant_that_kept_it(
    retained_by: str | None, uid: str, adopt: str | None, expected: NameClaim | str
) -> None:
    claim = name_claim("acme", uid, retained_by, adopt)
    if isinstance(expected, str):
        assert claim.adopts is None and claim.refused is not None and expected in claim.refused
        assert "(uid old)" in claim.refused
    else:
        assert claim == expected
