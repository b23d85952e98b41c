"""The admission stamp's signature, and its check before anything runs. Pure.

The webhooks stamp an admitted workflow with its requester, the policy version and the plan hashes
(workflows/admission.py), but a stamp is only annotations: with the webhook configurations deleted (by an admin, an
uninstall, a broken upgrade) anyone allowed to create AgentWorkflows could write one naming another agent. So the
stamp carries an HMAC-SHA256 over the workflow's identity that does not depend on its uid (unknown at admission):
namespace, name, requester, policy version, plan hashes, a digest of the spec and an admission id the mutating
webhook makes for each admission (so each admission's signature, the ticket its object claims, is its own). The
key is the operator's own (made once, kept where only the operator reads it: handlers/stamping.py), in a small ring
by id so that keys can be rotated while workflows signed with an older one are still verified. The operator runs
a workflow only if `verify` finds its stamp whole; otherwise it is Denied (`Unadmitted`) and nothing runs.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

from ..api.agentworkflow import AgentWorkflowSpec, AgentWorkflowStatus
from ..lifecycle.agents import Outcome, Report, Wait
from ..lifecycle.outcome import Notice
from .admission import PLAN_HASHES, POLICY_VERSION, REQUESTER, STAMP_PREFIX, canonical_spec

SIGNATURE = STAMP_PREFIX + "signature"  # "v2:<key id>:<hex HMAC-SHA256>"
ADMISSION_ID = STAMP_PREFIX + "admission-id"  # random, one per admission: signed (v2)
FORMAT = "v2"
LEGACY_FORMAT = "v1"  # stamps of workflows admitted before admission ids: verified, never made
KEY_BYTES = 32
RING_SIZE = 4  # keys kept: the current one and the last three it replaced
KEY_ID = re.compile(r"^[a-z0-9]{1,32}$")
SIGNED = (REQUESTER, POLICY_VERSION, PLAN_HASHES)
UNADMITTED = "Unadmitted"


@dataclass(frozen=True)
class KeyRing:
    """The operator's stamp keys by id; `current` signs, every key in the ring verifies."""

    current: str
    keys: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.current not in self.keys:
            raise ValueError(f"the key ring has no key {self.current}")
        for key_id, key in self.keys.items():
            if not KEY_ID.match(key_id) or len(key) != KEY_BYTES:
                raise ValueError(f"key {key_id!r} is not a {KEY_BYTES}-byte key with a lowercase id")


def key_id_at(now: datetime.datetime) -> str:
    """A new key's id: when it was made (so ids sort by age), and a random suffix."""
    return now.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%S") + secrets.token_hex(3)


def new_ring(key_id: str) -> KeyRing:
    """A ring of one fresh random key."""
    return KeyRing(key_id, {key_id: secrets.token_bytes(KEY_BYTES)})


def rotated(ring: KeyRing, key_id: str, size: int = RING_SIZE) -> KeyRing:
    """A fresh key signs from now on; the `size - 1` newest keys before it still verify, older ones are dropped."""
    fresh = new_ring(key_id)
    kept = sorted(k for k in ring.keys if k != key_id)[-(size - 1) :] if size > 1 else []
    return KeyRing(fresh.current, {**{k: ring.keys[k] for k in kept}, **fresh.keys})


CURRENT_FIELD = "current"  # the stored ring: {"current": id, "key-<id>": key, ...}
KEY_FIELD_PREFIX = "key-"


def ring_fields(ring: KeyRing) -> dict[str, bytes]:
    """The ring as stored (a Secret's data, before base64): insertion order is age."""
    return {CURRENT_FIELD: ring.current.encode(), **{KEY_FIELD_PREFIX + k: v for k, v in ring.keys.items()}}


def ring_of(fields: Mapping[str, bytes]) -> KeyRing:
    """The stored ring; ValueError when it is not one (never a partial ring)."""
    current = fields.get(CURRENT_FIELD)
    if current is None:
        raise ValueError(f"no {CURRENT_FIELD!r} key id")
    keys = {k.removeprefix(KEY_FIELD_PREFIX): v for k, v in fields.items() if k.startswith(KEY_FIELD_PREFIX)}
    return KeyRing(current.decode(), keys)


def spec_digest(spec: AgentWorkflowSpec) -> str:
    """SHA-256 of the spec as its model reads it (canonical JSON): what was admitted is what runs."""
    return hashlib.sha256(canonical_spec(spec).encode()).hexdigest()


def _mac(key: bytes, form: str, namespace: str, name: str, stamp: Mapping[str, str], spec: AgentWorkflowSpec) -> str:
    message = [form, namespace, name, *(stamp.get(k, "") for k in SIGNED), spec_digest(spec)]
    if form == FORMAT:
        message.append(stamp.get(ADMISSION_ID, ""))
    encoded = json.dumps(message, separators=(",", ":"), ensure_ascii=True).encode()
    return hmac.new(key, encoded, hashlib.sha256).hexdigest()


def new_admission_id() -> str:
    return secrets.token_hex(16)


def sign(
    namespace: str,
    name: str,
    spec: AgentWorkflowSpec,
    stamp: Mapping[str, str],
    ring: KeyRing,
    admission_id: str,
) -> dict[str, str]:
    """The stamp with its admission id and its signature, by the ring's current key."""
    stamped = {**stamp, ADMISSION_ID: admission_id}
    mac = _mac(ring.keys[ring.current], FORMAT, namespace, name, stamped, spec)
    return {**stamped, SIGNATURE: f"{FORMAT}:{ring.current}:{mac}"}


@dataclass(frozen=True)
class StampCheck:
    """What `verify` found: the requester the operator admitted, or why the stamp is not the operator's."""

    requester: str | None = None
    problem: str | None = None


def signing_key(annotations: Mapping[str, str]) -> str | None:
    """The key id a signature names (None: no signature of this format)."""
    form, _, rest = annotations.get(SIGNATURE, "").partition(":")
    return rest.partition(":")[0] or None if form in (FORMAT, LEGACY_FORMAT) else None


def verify(
    namespace: str, name: str, spec: AgentWorkflowSpec, annotations: Mapping[str, str], ring: KeyRing
) -> StampCheck:
    """Whether the workflow carries a stamp the operator's webhook signed for exactly this namespace, name and spec."""
    form, _, rest = annotations.get(SIGNATURE, "").partition(":")
    needed = (*SIGNED, SIGNATURE, ADMISSION_ID) if form != LEGACY_FORMAT else (*SIGNED, SIGNATURE)
    missing = [key for key in needed if not annotations.get(key)]
    if missing:
        return StampCheck(problem=f"not admitted by the operator's webhook: {', '.join(missing)} missing")
    key_id, _, mac = rest.partition(":")
    if form not in (FORMAT, LEGACY_FORMAT) or not key_id or not mac:
        return StampCheck(problem=f"{SIGNATURE} is not a {FORMAT} signature")
    key = ring.keys.get(key_id)
    if key is None:
        return StampCheck(problem=f"{SIGNATURE} names key {key_id}, which is not in the operator's key ring")
    if not hmac.compare_digest(mac, _mac(key, form, namespace, name, annotations, spec)):
        return StampCheck(
            problem=f"{SIGNATURE} does not match the workflow's namespace, name, requester, policy version, plan "
            "hashes and spec: the stamp was written or changed by someone other than the operator's webhook"
        )
    return StampCheck(requester=annotations[REQUESTER])


def admission_outcome(
    namespace: str, name: str, spec: AgentWorkflowSpec, annotations: Mapping[str, str], ring: KeyRing | None
) -> Outcome | None:
    """Before anything runs: None when the stamp is the operator's; a wait when its keys could not be read (nothing
    runs unverified); else Denied (`unadmitted`)."""
    if ring is None:
        return Outcome(wait=Wait("AdmissionKeysUnavailable", "the operator's admission keys could not be read", 10))
    check = verify(namespace, name, spec, annotations, ring)
    return unadmitted(check.problem) if check.problem is not None else None


def claim_outcome(uid: str, owner: str | None) -> Outcome | None:
    """A verified stamp is good for the one object admission let through: the first to run claims it (`owner`, the
    uid that holds it now). A stamp copied onto a new object of the same name and spec (the webhooks bypassed, the
    admitted one deleted) is a replay."""
    if owner is None:
        return unadmitted("admission has no record of this stamp")
    if owner != uid:
        return unadmitted(f"this stamp was admitted for another object of this name (uid {owner}): a replay")
    return None


def unadmitted(problem: str) -> Outcome:
    """A workflow whose stamp is not the operator's: Denied, a Warning Event naming what is wrong, nothing run."""
    message = f"the admission stamp is not valid ({problem}); no step was run"
    status = AgentWorkflowStatus(steps=[], completedSteps=0)
    return Outcome(
        report=Report("Denied", False, UNADMITTED, message, status),
        events=(Notice(UNADMITTED, message, warning=True),),
    )
