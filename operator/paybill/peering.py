"""Leader election over kopf's peering: of the replicas, exactly one handles the cluster, the others stand by.

kopf pauses an operator that sees a live peer of higher priority in the ClusterKopfPeering object, and pauses
every one that sees a peer of the same priority; it has no leases. So each replica takes a ticket when it starts,
one higher than any taken before, by a compare-and-swap write on the peering object (its resourceVersion as the
precondition), and runs with priority ``-ticket``: the replica that started first leads; the others stay paused
(kopf starts a mandatory peering paused, and lists the object only after this registration, so a later replica
always sees the earlier one). When the leader stops, its record goes at once; when it is killed, its record
expires after ``lifetime`` seconds, and the next oldest replica resumes. No two tickets are equal, so no two
replicas ever run at once, and none waits forever for a twin.

The pure part (tickets, who leads) works on the object's ``status``: ``{identity: {priority, lifetime, lastseen}}``.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .kubeclient import Kube, KubeError, resource_path

API_VERSION = "kopf.dev/v1"
PLURAL = "clusterkopfpeerings"
KIND = "ClusterKopfPeering"
TICKET_ANNOTATION = "paybill.dev/peering-ticket"
PEERING_ENV = "PAYBILL_PEERING"
LIFETIME_ENV = "PAYBILL_PEERING_LIFETIME"
DEFAULT_LIFETIME = 30  # seconds; kopf renews 5-10 s before it ends
GHOST_AHEAD = datetime.timedelta(minutes=10)  # a record stamped further ahead is no live replica's renewal
MIN_LIFETIME = 10  # kopf's renewal comes 5-10 s early: a shorter record could expire between renewals
REGISTER_ATTEMPTS = 20
IDENTITY: str | None = None  # set by `paybill operator` before kopf starts: the identity it gives kopf's peering too

# kopf's peering CRD (kopf ships it in its documentation only). Cluster-wide: the operator is.
PEERING_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": f"{PLURAL}.kopf.dev"},
    "spec": {
        "scope": "Cluster",
        "group": "kopf.dev",
        "names": {"kind": KIND, "plural": PLURAL, "singular": "clusterkopfpeering"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                        },
                    }
                },
            }
        ],
    },
}


def write_peering_crd(directory: Path) -> Path:
    """crds/clusterkopfpeerings.kopf.dev.yaml, beside Paybill's own CRDs (`make crds`; the chart installs it)."""
    path = directory / f"{PEERING_CRD['metadata']['name']}.yaml"
    header = "# kopf's peering CRD (leader election: operator/paybill/peering.py), written by `make crds`.\n"
    path.write_text(header + yaml.safe_dump(PEERING_CRD, sort_keys=False, width=120))
    return path


@dataclass(frozen=True)
class Election:
    """This replica's part in the election: the peering object's name, its own identity, its record's lifetime."""

    name: str
    identity: str
    lifetime: int


@dataclass(frozen=True)
class PeerRecord:
    identity: str
    priority: int
    deadline: datetime.datetime

    def alive(self, now: datetime.datetime) -> bool:
        return self.deadline > now


def own_identity(environ: Mapping[str, str]) -> str:
    """The Pod's name when the chart gives it (POD_ID, as kopf reads it), else host, process and a random part."""
    return environ.get("POD_ID") or f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(3)}"


def election(environ: Mapping[str, str], identity: str | None) -> Election | None:
    """The election this replica takes part in: PAYBILL_PEERING names the peering object; unset, it runs alone.
    ValueError when peering is asked for without an identity kopf shares (`paybill operator` gives one, and
    kopf takes POD_ID as its own)."""
    name = environ.get(PEERING_ENV) or ""
    if not name:
        return None
    identity = identity or environ.get("POD_ID")  # kopf's own identity when it is given one
    if not identity:
        raise ValueError(
            f"{PEERING_ENV} needs `paybill operator`, or POD_ID (kopf and the election share one identity)"
        )
    lifetime = int(environ.get(LIFETIME_ENV) or DEFAULT_LIFETIME)
    if lifetime < MIN_LIFETIME:
        raise ValueError(f"{LIFETIME_ENV} must be at least {MIN_LIFETIME} seconds (kopf renews 5-10 s early)")
    return Election(name, identity, lifetime)


def records(status: Mapping[str, Any]) -> list[PeerRecord]:
    """The peers a peering object's status lists (kopf's own reading: a record without lastseen is fresh, one
    without lifetime lives 60 s); malformed entries are not peers."""
    found = []
    now = datetime.datetime.now(datetime.UTC)
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue
        try:
            priority = int(info.get("priority", 0))
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
            lastseen = datetime.datetime.fromisoformat(info["lastseen"]) if info.get("lastseen") else now
        except (TypeError, ValueError):
            continue
        if lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        found.append(PeerRecord(str(identity), priority, lastseen + lifetime))
    return found


def ghosts(status: Mapping[str, Any], now: datetime.datetime) -> list[str]:
    """Records no live replica keeps: kopf reads one without lastseen as fresh forever, and one stamped in the future
    (a hand-made entry, a clock far off) as alive until then; either would pause every replica behind it. Only a
    stamp more than GHOST_AHEAD ahead of this replica's clock counts: a live peer whose clock runs somewhat ahead (or
    this one's behind) must never have its record cleared, or two replicas would lead."""
    found = []
    for identity, info in status.items():
        if not isinstance(info, Mapping):
            continue
        try:
            lastseen = datetime.datetime.fromisoformat(info["lastseen"]) if info.get("lastseen") else None
            lifetime = datetime.timedelta(seconds=int(info.get("lifetime", 60)))
        except (TypeError, ValueError):
            found.append(str(identity))
            continue
        if lastseen is not None and lastseen.tzinfo is None:
            lastseen = lastseen.replace(tzinfo=datetime.UTC)
        if lastseen is None or lastseen > now + max(lifetime, GHOST_AHEAD):
            found.append(str(identity))
    return found


def next_ticket(annotations: Mapping[str, str], peers: list[PeerRecord]) -> int:
    """One more than any ticket taken: the annotation's count, or any record's ticket (priority -ticket) above it."""
    text = annotations.get(TICKET_ANNOTATION, "0")
    taken = int(text) if text.isdigit() else 0
    return max([taken, *(-peer.priority for peer in peers if peer.priority <= 0)]) + 1


def leader(peers: list[PeerRecord], now: datetime.datetime) -> str | None:
    """Who handles the cluster now: the live peer of the highest priority, if no other live one has as much (kopf
    pauses both of a tie)."""
    alive = sorted((p for p in peers if p.alive(now)), key=lambda p: p.priority, reverse=True)
    if not alive or (len(alive) > 1 and alive[1].priority == alive[0].priority):
        return None
    return alive[0].identity


def record(priority: int, lifetime: int, now: datetime.datetime) -> dict[str, Any]:
    """A peer's record as kopf writes it."""
    return {"priority": priority, "lifetime": lifetime, "lastseen": now.isoformat()}


def register(kube: Kube, elected: Election) -> int:
    """Take this replica's ticket and write its record, in one compare-and-swap write; the priority to run with.
    The peering object is made when missing. KubeError (404) when the peering CRD is not installed."""
    for _ in range(REGISTER_ATTEMPTS):
        found = kube.get(API_VERSION, PLURAL, elected.name)
        if found is None:
            try:
                kube.create({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": elected.name}})
            except KubeError as exc:
                if exc.status != 409:
                    raise
            continue
        meta = found["metadata"]
        ticket = next_ticket(meta.get("annotations") or {}, records(found.get("status") or {}))
        now = datetime.datetime.now(datetime.UTC)
        patch = {
            "metadata": {"resourceVersion": meta["resourceVersion"], "annotations": {TICKET_ANNOTATION: str(ticket)}},
            "status": {elected.identity: record(-ticket, elected.lifetime, now)},
        }
        try:
            kube.merge_patch(API_VERSION, PLURAL, elected.name, patch)
        except KubeError as exc:
            if exc.status == 409:  # another replica took a ticket meanwhile: take the next one
                continue
            raise
        return -ticket
    raise KubeError(409, f"no ticket taken in {elected.name} after {REGISTER_ATTEMPTS} attempts")


def role(kube: Kube, elected: Election, timeout: float | None = None) -> str:
    """`leader` or `standby` as the peering object says now; `unregistered` when this replica has no live record
    (it cannot take over). KubeError (or a connection error) when it cannot be read within `timeout` seconds."""
    return _standing(kube, elected, timeout)[0]


def _standing(kube: Kube, elected: Election, timeout: float | None) -> tuple[str, datetime.datetime | None]:
    """This replica's role as the peering object says now, and while leading, its own record's deadline."""
    try:
        found = kube.request("GET", resource_path(API_VERSION, PLURAL, name=elected.name), timeout=timeout) or {}
    except KubeError as exc:
        if exc.status != 404:
            raise
        found = {}
    peers = records(found.get("status") or {})
    now = datetime.datetime.now(datetime.UTC)
    own = next((peer for peer in peers if peer.identity == elected.identity and peer.alive(now)), None)
    if own is None:
        return "unregistered", None
    return ("leader", own.deadline) if leader(peers, now) == elected.identity else ("standby", None)


class NotLeading(Exception):
    """This replica does not hold the election now (or cannot tell): it must not act on the cluster."""


RESIGNING = "resigning"
FENCE_MARGIN = datetime.timedelta(seconds=1)  # a leading answer is not trusted this close to the record's deadline


class Fence:
    """Whether this replica holds the election right now, read fresh from the API server and cached for at most
    `ttl` seconds (well under the lifetime) and never past its own record's deadline. kopf's pause stops its watches
    only: a handler already queued or running, or a replica frozen past its record's expiry and resumed, would act
    beside the new leader. Every reconciling handler asks the fence first."""

    def __init__(self, kube: Kube, elected: Election, ttl: float | None = None, timeout: float = 3.0) -> None:
        self.kube, self.elected, self.timeout = kube, elected, timeout
        self.ttl = ttl if ttl is not None else min(1.0, elected.lifetime / 10)
        self._known: tuple[float, str, datetime.datetime | None] | None = None
        self._lock = threading.Lock()
        self._acting = threading.Condition()  # guards the two below
        self._handlers = 0  # handlers (begin) and events in process (enter) not ended yet
        self._resigned = False

    def role(self) -> str:
        """`leader`, `standby`, `unregistered` (no live record) or `resigning` (shutting down); a read error raises."""
        if self._resigned:
            return RESIGNING
        with self._lock:
            if self._known is None or not self._valid(*self._known):
                role, deadline = _standing(self.kube, self.elected, self.timeout)
                self._known = (time.monotonic(), role, deadline)
            return self._known[1]

    def _valid(self, read_at: float, role: str, deadline: datetime.datetime | None) -> bool:
        if time.monotonic() - read_at >= self.ttl:  # the monotonic clock runs on while the process is frozen
            return False
        return deadline is None or datetime.datetime.now(datetime.UTC) < deadline - FENCE_MARGIN

    def cached(self) -> str | None:
        """The role while the last reading is still valid, without reading (None: ask `role`)."""
        known = self._known
        return known[1] if known is not None and self._valid(*known) else None

    def forget(self) -> None:
        with self._lock:
            self._known = None

    def begin(self) -> None:
        """A handler starts acting: NotLeading unless this replica leads now and is not resigning. Each begin()
        that returns is matched by one end()."""
        with self._acting:
            if self._resigned:
                raise NotLeading(f"this replica is {RESIGNING} from ClusterKopfPeering {self.elected.name}")
            self._handlers += 1
        try:
            self.ensure()
        except NotLeading:
            self.end()
            raise

    def enter(self) -> None:
        """An event is being processed (its handlers, then kopf's patch of the result): resign() waits for it too;
        matched by one end()."""
        with self._acting:
            self._handlers += 1

    def end(self) -> None:
        with self._acting:
            self._handlers -= 1
            self._acting.notify_all()

    def rejoin(self) -> None:
        """Acting again after a resignation that was no shutdown (kopf ends a keepalive when the peering resource
        leaves its view, and starts a new one when it comes back)."""
        with self._acting:
            self._resigned = False
        self.forget()

    def resign(self, timeout: float) -> int:
        """Stop acting before the record goes (a replica shutting down: kopf removes its record at once, and the
        standby takes over while handlers here may still run): no handler begins from now on, and the running ones
        are waited for, up to `timeout` seconds. How many still run then."""
        with self._acting:
            self._resigned = True
            self._acting.wait_for(lambda: self._handlers == 0, timeout)
            return self._handlers

    def ensure(self) -> None:
        """NotLeading unless this replica leads now."""
        try:
            role = self.role()
        except Exception as exc:  # cannot tell: not leading
            raise NotLeading(f"the election cannot be read ({type(exc).__name__})") from None
        if role != "leader":
            raise NotLeading(f"this replica is {role} in ClusterKopfPeering {self.elected.name}, not the leader")


FENCE: Fence | None = None  # set by the operator's startup when it takes part in an election


def renew(kube: Kube, elected: Election, priority: int) -> int:
    """Renew this replica's record, in a compare-and-swap write, only while it is still live with `priority`; a
    record that expired (a replica frozen or cut off past its lifetime) or was cleaned away means the election was
    lost: a new ticket is taken (`register`), so the replica stands by behind whoever took over. Ghost records
    (`ghosts`) go in the same write. The priority to run with from now on."""
    for _ in range(REGISTER_ATTEMPTS):
        found = kube.get(API_VERSION, PLURAL, elected.name)
        if found is None:
            return register(kube, elected)
        now = datetime.datetime.now(datetime.UTC)
        own = next((p for p in records(found.get("status") or {}) if p.identity == elected.identity), None)
        if own is None or not own.alive(now) or own.priority != priority:
            return register(kube, elected)
        cleared: dict[str, Any] = {ghost: None for ghost in ghosts(found.get("status") or {}, now)}
        patch = {
            "metadata": {"resourceVersion": found["metadata"]["resourceVersion"]},
            "status": {**cleared, elected.identity: record(priority, elected.lifetime, now)},
        }
        try:
            kube.merge_patch(API_VERSION, PLURAL, elected.name, patch)
        except KubeError as exc:
            if exc.status == 409:  # written meanwhile (a peer's renewal or cleaning): read again
                continue
            raise
        return priority
    raise KubeError(409, f"record not renewed in {elected.name} after {REGISTER_ATTEMPTS} attempts")
