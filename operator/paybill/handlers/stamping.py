"""The admission stamp's keys and the day's statement quota, for the webhooks (handlers/admission.py) and the
workflow runs (handlers/agentworkflow.py). What to decide is in workflows/stamp.py and workflows/quota.py.

The key ring is made once and kept where only the operator reads it: the Secret KEYS_SECRET in the operator's
namespace (the chart's), else, for a local run without one, the operator's own control database (closed to
everyone else). It is read once per process and again when a signature names a key the copy does not have (a key
rotated in by another replica or an administrator). Key material is never logged, nor put in status or Events.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import datetime
import threading
from collections.abc import Mapping
from typing import Any, Protocol

import kopf
import psycopg

from ..api.agentworkflow import AgentWorkflowSpec
from ..database import DatabaseUnavailable, TenantDatabases
from ..database.control import Control
from ..errors import first_line
from ..kubeclient import Kube, KubeError
from ..lifecycle.agents import Outcome, Wait
from ..lifecycle.tenant import MANAGED_BY
from ..workflows.admission import Verdict, refuse
from ..workflows.quota import over_quota, utc_day
from ..workflows.reconcile import WorkflowObject
from ..workflows.stamp import (
    SIGNATURE,
    KeyRing,
    claim_outcome,
    key_id_at,
    new_ring,
    ring_fields,
    ring_of,
    sign,
    signing_key,
)
from .apply import operator_namespace

KEYS_SECRET = "paybill-admission-keys"


class KeyStore(Protocol):
    def load(self) -> KeyRing:
        """The stored ring; made and stored first when there is none."""
        ...


class SecretKeys:
    """The ring in a Secret of the operator's namespace."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace

    def load(self) -> KeyRing:
        found = self.kube.get("v1", "secrets", KEYS_SECRET, self.namespace)
        if found is None:
            try:
                return self._create(new_ring(key_id_at(datetime.datetime.now(datetime.UTC))))
            except KubeError as exc:
                if exc.status != 409:
                    raise
            found = self.kube.get("v1", "secrets", KEYS_SECRET, self.namespace)  # another replica made it
            if found is None:
                raise KubeError(404, f"secret {self.namespace}/{KEYS_SECRET} was made and is gone")
        data = found.get("data") or {}
        return ring_of({key: base64.b64decode(value) for key, value in data.items()})

    def _create(self, ring: KeyRing) -> KeyRing:
        self.kube.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": KEYS_SECRET, "namespace": self.namespace, "labels": dict(MANAGED_BY)},
                "data": {key: base64.b64encode(value).decode() for key, value in ring_fields(ring).items()},
            }
        )
        return ring


class ControlKeys:
    """The ring in the operator's control database (a local run: no namespace of its own)."""

    def __init__(self, control: Control) -> None:
        self.control = control

    def load(self) -> KeyRing:
        made = ring_fields(new_ring(key_id_at(datetime.datetime.now(datetime.UTC))))
        return ring_of(self.control.admission_keys(made))


class StampKeys:
    """The ring as this process last read it (None until read, or when it could not be)."""

    def __init__(self, store: KeyStore | None) -> None:
        self._store = store
        self._ring: KeyRing | None = None
        self._lock = threading.Lock()

    def cached(self) -> KeyRing | None:
        return self._ring

    def ring(self, needed: str | None = None) -> KeyRing | None:
        """The ring, read again if it lacks the key `needed` (a rotation elsewhere); None if it cannot be read."""
        ring = self._ring
        if ring is not None and (needed is None or needed in ring.keys):
            return ring
        with self._lock:
            if self._store is None:
                return None
            try:
                self._ring = self._store.load()
            except (KubeError, DatabaseUnavailable, psycopg.Error, ValueError):
                return self._ring  # the last copy if any: a key it lacks fails verification, never passes it
            return self._ring


def stamp_keys(memo: kopf.Memo) -> StampKeys:
    """This operator's keys (made on first use: the Kubernetes client and the database come from settings.py)."""
    keys: StampKeys | None = getattr(memo, "stamp_keys", None)
    if keys is None:
        namespace, databases = operator_namespace(), getattr(memo, "databases", None)
        store: KeyStore | None = None
        if namespace:
            store = SecretKeys(memo.kube, namespace)
        elif databases is not None:
            store = ControlKeys(databases.control)
        keys = memo.stamp_keys = StampKeys(store)
    return keys


def ring_for(memo: kopf.Memo, annotations: Mapping[str, str]) -> KeyRing | None:
    """The ring to verify a workflow's stamp with (read again if its signature names a key not yet seen)."""
    return stamp_keys(memo).ring(signing_key(annotations))


# -- the webhooks' side ----------------------------------------------------------------------------------------------


async def signed(
    verdict: Verdict, body: Mapping[str, Any], spec: AgentWorkflowSpec, memo: kopf.Memo, admission_id: str
) -> Verdict:
    """An admitted create's stamp with its admission id and its signature over the workflow's namespace, name, spec
    and that id (the mutating webhook makes the id; the validating one checks the stamp with the id it carries)."""
    if not verdict.allowed or not verdict.stamp:
        return verdict
    meta = body.get("metadata") or {}
    name, namespace = str(meta.get("name") or ""), str(meta.get("namespace") or "")
    if not name:
        return refuse("metadata.name is required: the admission stamp is signed for the workflow's name")
    keys = stamp_keys(memo)
    ring = keys.cached() or await asyncio.to_thread(keys.ring)
    if ring is None:
        return refuse("the operator's admission keys could not be read: nothing is admitted unsigned")
    return dataclasses.replace(verdict, stamp=sign(namespace, name, spec, verdict.stamp, ring, admission_id))


async def charged(verdict: Verdict, memo: kopf.Memo, dryrun: bool, now: datetime.datetime) -> str | None:
    """Charge an admitted create's statements to its tenant's UTC day (a dry run only looks): None when within the
    plan's daily limit, else why not. Counted here, once: deleting the workflow later gives nothing back."""
    charge = verdict.statements
    if charge is None:
        return None
    databases: TenantDatabases | None = memo.databases
    if databases is None:
        return "the operator has no control database: the day's agent statements cannot be counted"
    control, day = databases.control, utc_day(now)
    try:
        if dryrun:
            used = await asyncio.to_thread(control.statements_used, charge.tenant, day)
            return None if used + charge.statements <= charge.limit else over_quota(charge, used, day)
        ticket = verdict.stamp.get(SIGNATURE)
        after = await asyncio.to_thread(
            control.charge_statements, charge.tenant, day, charge.statements, charge.limit, ticket
        )
        if after is None:
            return over_quota(charge, await asyncio.to_thread(control.statements_used, charge.tenant, day), day)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        return f"the day's agent statements could not be counted: {first_line(exc)}"
    return None


def claimed(memo: kopf.Memo, workflow: WorkflowObject) -> Outcome | None:
    """After its stamp verified: the workflow object is the one admission let through (its ticket is, or now
    becomes, this uid's). Nothing runs while the record cannot be read."""
    databases: TenantDatabases | None = memo.databases
    if databases is None:
        return Outcome(wait=Wait("DatabaseUnavailable", "the operator has no control database", 10))
    try:
        owner = databases.control.claim_ticket(workflow.annotations[SIGNATURE], workflow.uid)
    except (DatabaseUnavailable, psycopg.Error) as exc:
        return Outcome(wait=Wait("DatabaseUnavailable", f"admission records not read: {first_line(exc)}", 10))
    return claim_outcome(workflow.uid, owner)
