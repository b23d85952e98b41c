"""Approvals bound to plan hashes: who may approve or reject a step, and what recorded approvals grant. Pure.

A step whose policy rule needs approval waits (phase AwaitingApproval) with its plan hash in status. A person with
the approver role for the tenant (ClusterRole `paybill-agentworkflow-approver`, bound in the tenant's namespace:
the `approve` verb on agentworkflows) approves exactly that hash,
`kubectl annotate agentworkflow/<name> paybill.dev/approve-<step>=<hash>`, or rejects the step,
`kubectl annotate agentworkflow/<name> paybill.dev/reject-<step>=<hash>`. Where a rule needs more than one approval,
each further approver writes a key of their own, `paybill.dev/approve-<step>.<anything>=<hash>`: a write that
changes no annotation is no approval, and each key counts for whoever last wrote it.

An annotation alone is never trusted: anyone who may patch the workflow can write one. The operator's admission
webhook sees who writes it (the API server's userInfo) and `review` admits the change only from a person (never a
ServiceAccount: agents are ServiceAccounts) who holds the approve verb there and did not submit the workflow; each
admitted change is appended to the audit log with the approver's identity (a `Grant`) before it is admitted. The
reconciler honours an approval only when the annotation and such a record agree (`granted`), and the engine
counts it only for the hash it names, which covers the statement, its parameters, the tenant and the policy
version: a changed policy voids every earlier approval.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

APPROVE_PREFIX = "paybill.dev/approve-"
REJECT_PREFIX = "paybill.dev/reject-"
APPROVE_VERB = "approve"  # a verb of its own on agentworkflows (as certificatesigningrequests' approve on signers)
APPROVER_ROLE = "paybill-agentworkflow-approver"
# The approver's ClusterRole, bound per tenant namespace with a RoleBinding: read workflows and their policies,
# annotate a workflow (patch) and approve. Nothing an agent's Role has; no Secrets.
APPROVER_RULES: list[dict[str, Any]] = [
    {
        "apiGroups": ["paybill.dev"],
        "resources": ["agentworkflows"],
        "verbs": ["get", "list", "watch", "patch", APPROVE_VERB],
    },
    {"apiGroups": ["paybill.dev"], "resources": ["agentpolicies"], "verbs": ["get", "list", "watch"]},
]
PLAN_HASH = re.compile(r"^[0-9a-f]{32}$")
# What lets a person act as a ServiceAccount of a namespace (and so submit as an agent): mint its tokens,
# impersonate it, or run a workload under it (any Pod may name any ServiceAccount of its namespace) or exec into one.
# (group, resource, subresource, verb); checked only where the ServiceAccount's name is given.
ACTING_AS_ACCOUNT: tuple[tuple[str, str, str, str], ...] = (
    ("", "serviceaccounts", "token", "create"),
    ("", "serviceaccounts", "", "impersonate"),
)
RUNNING_AS_ACCOUNT: tuple[tuple[str, str, str, str], ...] = (
    *(("", "pods", sub, "create") for sub in ("", "exec", "attach")),
    *((group, resource, "", verb) for group, resource in (
        ("", "replicationcontrollers"), ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
        ("apps", "replicasets"), ("batch", "jobs"), ("batch", "cronjobs"),
    ) for verb in ("create", "update", "patch")),
)  # fmt: skip
SERVICE_ACCOUNT_USER = "system:serviceaccount:"
AUDIT_KIND = "AgentWorkflow"


def approver_cluster_role() -> dict[str, Any]:
    """The approver ClusterRole's manifest (the chart renders APPROVER_RULES)."""
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": APPROVER_ROLE, "labels": {"app.kubernetes.io/managed-by": "paybill"}},
        "rules": APPROVER_RULES,
    }


class Verdict(StrEnum):
    APPROVE = "approve"
    REJECT = "reject"


AUDIT_EVENTS = {Verdict.APPROVE: "ApprovalGranted", Verdict.REJECT: "ApprovalRejected"}
WITHDRAWN_EVENTS = {Verdict.APPROVE: "ApprovalWithdrawn", Verdict.REJECT: "RejectionWithdrawn"}
GRANT_EVENTS = frozenset(AUDIT_EVENTS.values()) | frozenset(WITHDRAWN_EVENTS.values())  # what `recorded` reads
PREFIXES = {Verdict.APPROVE: APPROVE_PREFIX, Verdict.REJECT: REJECT_PREFIX}


@dataclass(frozen=True)
class Requester:
    """Who the API server says is writing (AdmissionReview request.userInfo)."""

    username: str
    groups: tuple[str, ...] = ()

    @classmethod
    def from_user_info(cls, info: Mapping[str, Any] | None) -> Requester:
        info = info or {}
        return cls(str(info.get("username") or ""), tuple(str(g) for g in info.get("groups") or ()))

    @property
    def service_account(self) -> bool:
        return self.username.startswith(SERVICE_ACCOUNT_USER) or "system:serviceaccounts" in self.groups

    @property
    def principal(self) -> str:
        """The name a policy rule's `approval.approvers` lists."""
        return f"user:{self.username}"


@dataclass(frozen=True)
class Change:
    """One approve-/reject- annotation written: set to `value`, or removed (None)."""

    verdict: Verdict
    step: str
    value: str | None
    key: str  # the annotation: <prefix><step>, or <prefix><step>.<anything> (a second approver's own)


@dataclass(frozen=True)
class Grant:
    """An approval or rejection the webhook admitted, as the audit log keeps it."""

    workflow_uid: str
    step: str
    verdict: Verdict
    plan_hash: str  # "": the annotation was removed (a withdrawal)
    approver: str  # the principal, e.g. user:alice
    annotation: str = ""  # the key written; "" is the plain <prefix><step>

    def __post_init__(self) -> None:
        if not self.annotation:
            object.__setattr__(self, "annotation", PREFIXES[self.verdict] + self.step)

    @property
    def event(self) -> str:
        """The audit record's event."""
        return (WITHDRAWN_EVENTS if not self.plan_hash else AUDIT_EVENTS)[self.verdict]

    def details(self) -> dict[str, Any]:
        return {
            "uid": self.workflow_uid,
            "step": self.step,
            "verdict": str(self.verdict),
            "planHash": self.plan_hash,
            "approver": self.approver,
            "annotation": self.annotation,
        }

    @classmethod
    def from_details(cls, details: Mapping[str, Any]) -> Grant | None:
        """The grant an audit record holds (None: not one)."""
        try:
            return cls(
                str(details["uid"]),
                str(details["step"]),
                Verdict(details["verdict"]),
                str(details["planHash"]),
                str(details["approver"]),
                str(details.get("annotation") or ""),  # records made before keys were recorded: the plain key
            )
        except (KeyError, ValueError):
            return None


@dataclass(frozen=True)
class Review:
    """The webhook's answer about the approval annotations of one write."""

    allowed: bool
    message: str = ""
    grants: tuple[Grant, ...] = ()


def changes(old: Mapping[str, str] | None, new: Mapping[str, str] | None) -> list[Change]:
    """The approve-/reject- annotations this write adds, changes or removes."""
    old, new = old or {}, new or {}
    found = []
    for key in sorted(set(old) | set(new)):
        if old.get(key) == new.get(key):
            continue
        for verdict, prefix in PREFIXES.items():
            if key.startswith(prefix):
                step = key[len(prefix) :].partition(".")[0]  # step names have no dots (the CRD's pattern)
                found.append(Change(verdict, step, new.get(key), key))
    return found


def review(
    old: Mapping[str, str] | None,
    new: Mapping[str, str] | None,
    requester: Requester,
    may_approve: bool,
    workflow_uid: str,
    steps: Iterable[str],
    submitter: str | None = None,
    acts_as_submitter: bool = False,
) -> Review:
    """Admit a write of approve-/reject- annotations only from a person with the approve verb on this workflow who
    did not submit it, for steps it has, with a plan hash as value; what it sets becomes a Grant to record.

    `may_approve`: the API server's answer (SubjectAccessReview) to whether the requester may `approve`
    agentworkflows in the workflow's namespace. `submitter`: the username that created the workflow, if known;
    `acts_as_submitter`: whether the requester may act as that ServiceAccount (ACTING_AS_ACCOUNT,
    RUNNING_AS_ACCOUNT), and so could have submitted as it."""
    written = changes(old, new)
    if not written:
        return Review(True)
    who = requester.username or "(unknown)"
    if not requester.username or requester.service_account:
        return Review(False, f"{who} is a ServiceAccount: only a person with the approver role approves or rejects")
    if submitter is not None and requester.username == submitter:
        return Review(False, f"{who} submitted this workflow and may not approve or reject its steps")
    if submitter is not None and acts_as_submitter:
        return Review(
            False,
            f"{who} can act as {submitter}, which submitted this workflow (its tokens, impersonation, or a "
            "workload run as it): one person may not both submit and approve",
        )
    if not may_approve:
        return Review(
            False,
            f"{who} may not approve agentworkflows in this namespace (the verb {APPROVE_VERB!r}: "
            f"bind ClusterRole {APPROVER_ROLE})",
        )
    known = set(steps)
    grants = []
    for change in written:
        if change.step not in known:
            return Review(False, f"{change.key}: the workflow has no step {change.step!r}")
        if change.value is None:  # withdrawn: recorded, so the key counts for nobody until written again
            grants.append(Grant(workflow_uid, change.step, change.verdict, "", requester.principal, change.key))
            continue
        if not PLAN_HASH.match(change.value):
            return Review(False, f"{change.key}: the value must be the step's plan hash (32 hex digits)")
        grants.append(Grant(workflow_uid, change.step, change.verdict, change.value, requester.principal, change.key))
    return Review(True, grants=tuple(grants))


def recorded(records: Iterable[Mapping[str, Any]], workflow_uid: str) -> list[Grant]:
    """The grants among audit records' details that are this workflow's (a workflow recreated under the same name
    has a new uid: nothing carries over)."""
    grants = (Grant.from_details(details) for details in records)
    return [g for g in grants if g is not None and g.workflow_uid == workflow_uid]


def granted(
    step: str, plan_hash: str | None, annotations: Mapping[str, str], grants: Sequence[Grant]
) -> frozenset[str]:
    """The approvers of exactly `plan_hash` for `step`: each approve annotation of the step that names that hash
    counts for whoever the last admitted write of that key recorded (so an approval withdrawn and the key set again
    by someone else is theirs alone)."""
    if plan_hash is None:
        return frozenset()
    return frozenset(
        g.approver
        for key, g in _latest(step, Verdict.APPROVE, grants).items()
        if g.plan_hash == plan_hash and annotations.get(key) == plan_hash
    )


def rejection(step: str, annotations: Mapping[str, str], grants: Sequence[Grant]) -> Grant | None:
    """The admitted rejection of `step` the annotation stands for, if any (a rejection ends the step whatever hash
    it named: refusing is always safe)."""
    standing = [g for key, g in _latest(step, Verdict.REJECT, grants).items() if annotations.get(key) == g.plan_hash]
    return standing[-1] if standing else None


def _latest(step: str, verdict: Verdict, grants: Sequence[Grant]) -> dict[str, Grant]:
    """The last admitted write of each annotation key of `step` with `verdict` (grants are in the audit's order)."""
    latest: dict[str, Grant] = {}
    for g in grants:
        if g.step == step and g.verdict == verdict:
            latest.pop(g.annotation, None)  # re-inserted last: the dict's order is the order of the writes
            latest[g.annotation] = g
    return latest


def voided(step: str, plan_hash: str | None, grants: Sequence[Grant]) -> list[Grant]:
    """Approvals of `step` given for another plan hash (the policy, the schema or the tenant changed since)."""
    return [g for g in grants if g.step == step and g.verdict == Verdict.APPROVE and g.plan_hash not in ("", plan_hash)]


def approve_command(workflow: str, step: str, plan_hash: str) -> str:
    return f"kubectl annotate agentworkflow/{workflow} {APPROVE_PREFIX}{step}={plan_hash}"
