"""Operator-wide kopf settings and shared context (set once at startup)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf
from kopf._core.engines import peering as kopf_peering

from .. import metrics, peering
from ..api.crdgen import all_crds
from ..audit import AuditLog, CheckpointStore, ConfigMapCheckpoint, FileCheckpoint
from ..database import TenantDatabases
from ..kubeclient import Kube, KubeError, load_config
from . import events, watches
from .apply import operator_namespace
from .persistence import PREFIX, DigestDiffBaseStorage

DATABASE_URL_ENV = "PAYBILL_DATABASE_URL"
BACKUP_DIR_ENV = "PAYBILL_BACKUP_DIR"
STATE_DIR_ENV = "PAYBILL_STATE_DIR"
WORKER_LIMIT_ENV = "PAYBILL_WORKER_LIMIT"
RESIGN_WAIT_S = 20.0  # at shutdown, the events and handlers in process are waited for this long (Pod grace: 30 s)


def state_directory(environ: Mapping[str, str]) -> Path:
    """The operator's state directory: PAYBILL_STATE_DIR, else $XDG_STATE_HOME/paybill, else
    ~/.local/state/paybill (never a shared temporary directory)."""
    if environ.get(STATE_DIR_ENV):
        return Path(environ[STATE_DIR_ENV])
    home = Path(environ.get("HOME") or Path.home())
    return Path(environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "paybill"


def backup_directory(environ: Mapping[str, str]) -> Path:
    """Where final backups go: PAYBILL_BACKUP_DIR, else `backups` in the operator's state directory. It is made
    0700 and files in it 0600 when the first backup is written."""
    if environ.get(BACKUP_DIR_ENV):
        return Path(environ[BACKUP_DIR_ENV])
    return state_directory(environ) / "backups"


def checkpoint_store(environ: Mapping[str, str], kube: Kube, namespace: str | None) -> CheckpointStore:
    """Where the audit chain's head is kept: a ConfigMap in the operator's namespace when it has one (it outlives
    the Pod, whose state directory may be an emptyDir), else `audit/` in the state directory (a local run)."""
    if namespace:
        return ConfigMapCheckpoint(kube, namespace)
    return FileCheckpoint(state_directory(environ) / "audit")


@kopf.on.startup()
def configure(
    settings: kopf.OperatorSettings, memo: kopf.Memo, logger: logging.Logger | logging.LoggerAdapter[Any], **_: Any
) -> None:
    settings.persistence.finalizer = f"{PREFIX}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=PREFIX)
    settings.persistence.diffbase_storage = DigestDiffBaseStorage()
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = events.COMPONENT  # kopf's own Events (handler outcomes) too
    settings.posting.reporting_instance = socket.gethostname()
    settings.watching.server_timeout = 300
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
    # Objects are worked on by at most this many workers at once (the rest queue): at startup over
    # thousands of tenants, an unbounded burst keeps its high-water memory for good.
    settings.queueing.worker_limit = int(os.environ.get(WORKER_LIMIT_ENV) or 128)
    settings.queueing.idle_timeout = 0.5  # a worker holds its slot while idle: free it soon
    settings.queueing.exit_timeout = RESIGN_WAIT_S  # at shutdown, the events in process finish (kopf: 2 s)
    load_config()
    memo.kube = Kube()
    events.install(memo.kube)
    database_url = os.environ.get(DATABASE_URL_ENV) or None
    backup_dir = backup_directory(os.environ)
    memo.databases = TenantDatabases(database_url, backup_dir) if database_url else None
    checkpoint = checkpoint_store(os.environ, memo.kube, operator_namespace())
    memo.audit = AuditLog(memo.databases.connect, checkpoint) if memo.databases else None
    logger.info(
        "Paybill operator started; tenant database %s; backups in %s",
        "configured" if database_url else f"not configured (set {DATABASE_URL_ENV})",
        backup_dir,
    )
    watches.PROGRESS.reset()
    watches.observe_kopf_watches()
    missing = watches.missing_crds(memo.kube, tuple(crd["metadata"]["name"] for crd in all_crds()))
    watches.PROGRESS.missing_at_start = missing
    if missing:
        logger.warning(
            "Paybill's CRDs are not installed (%s): waiting for them, they are served as soon as they appear; "
            "apply them (crds/, or `paybill crds`)",
            ", ".join(missing),
        )
    elected = join_election(settings, memo.kube, logger)  # last: kopf's own keepalive follows at once
    peering.FENCE = peering.Fence(memo.kube, elected) if elected is not None else None
    metrics.STATE.operator = metrics.Operator(memo.kube, database_url, elected, fence=peering.FENCE)
    metrics.STATE.operator.started.set()


def join_election(
    settings: kopf.OperatorSettings, kube: Kube, logger: logging.Logger | logging.LoggerAdapter[Any]
) -> peering.Election | None:
    """With PAYBILL_PEERING, take a ticket in that ClusterKopfPeering and run as kopf's mandatory peering with its
    priority (paused until this replica is the oldest live one: paybill/peering.py); without it, run alone."""
    try:
        elected = peering.election(os.environ, peering.IDENTITY)
    except ValueError as exc:
        raise kopf.PermanentError(str(exc)) from None
    if elected is None:
        settings.peering.standalone = True
        return None
    try:
        priority = peering.register(kube, elected)
    except KubeError as exc:
        raise kopf.TemporaryError(
            f"cannot join the election in ClusterKopfPeering {elected.name} ({exc}): is the peering CRD "
            f"({peering.PEERING_CRD['metadata']['name']}) installed?",
            delay=10,
        ) from None
    settings.peering.standalone = False
    settings.peering.mandatory = True
    settings.peering.clusterwide = True
    settings.peering.name = elected.name
    settings.peering.priority = priority
    settings.peering.lifetime = elected.lifetime
    settings.peering.stealth = True  # no log line per keepalive
    renew_only_while_elected(elected, kube)
    logger.info(
        "leader election in ClusterKopfPeering %s as %s (ticket %d): paused while an older replica lives",
        elected.name,
        elected.identity,
        -priority,
    )
    return elected


def renew_only_while_elected(elected: peering.Election, kube: Kube) -> None:
    """kopf renews a replica's record blindly: a leader frozen past its record's lifetime (SIGSTOP, a stalled node)
    would, once resumed, write it again and outrank the replica that took over. Its renewals go through
    peering.renew instead: a record that expired or was cleaned away means the election was lost, and the replica
    takes a new ticket and stands by (kopf pauses it at the next peering event; the fence refuses its handlers
    meanwhile). Removing the record on exit (lifetime 0) stays kopf's."""
    touch = getattr(kopf_peering.touch, "paybill_wrapped", kopf_peering.touch)

    async def renew(
        *, identity: Any, settings: kopf.OperatorSettings, lifetime: int | None = None, **kwargs: Any
    ) -> None:
        if lifetime == 0 and identity == elected.identity and peering.FENCE is not None:
            # shutting down: the handlers running finish (and no new one begins) before the standby may take over
            running = await asyncio.to_thread(peering.FENCE.resign, RESIGN_WAIT_S)
            if running:
                logging.getLogger("paybill.peering").warning(
                    "resigning from ClusterKopfPeering %s with %d handler(s) still running after %ss",
                    elected.name,
                    running,
                    RESIGN_WAIT_S,
                )
        if lifetime == 0 or identity != elected.identity:
            await touch(identity=identity, settings=settings, lifetime=lifetime, **kwargs)
            return
        held = settings.peering.priority
        priority = await asyncio.to_thread(peering.renew, kube, elected, held)
        if peering.FENCE is not None and peering.FENCE.role() == peering.RESIGNING:
            peering.FENCE.rejoin()  # a keepalive started again: that resignation was no shutdown
        if priority != held:
            logging.getLogger("paybill.peering").warning(
                "this replica's record in ClusterKopfPeering %s expired (frozen or cut off past its lifetime): the "
                "election is lost; standing by with ticket %d",
                elected.name,
                -priority,
            )
            settings.peering.priority = priority
            if peering.FENCE is not None:
                peering.FENCE.forget()

    renew.paybill_wrapped = touch  # type: ignore[attr-defined]
    kopf_peering.touch = renew  # type: ignore[assignment]


@kopf.on.cleanup()
def flush_audit(memo: kopf.Memo, **_: Any) -> None:
    """Records still waiting for the database get a last attempt; the log says how many could not be written.
    Then the database connections are closed (the audit log writes through them)."""
    if memo.get("audit") is not None:
        memo.audit.close()
    if memo.get("databases") is not None:
        memo.databases.close()


@kopf.on.probe(id="kube")
def kube_reachable(memo: kopf.Memo, **_: Any) -> str:
    """The API server's version, or why it cannot be reached now (liveness is the watches probe's verdict:
    a raising probe would be retried by kopf, and /healthz would hang instead of answering)."""
    try:
        return str(memo.kube.request("GET", "/version")["gitVersion"])
    except Exception as error:  # any failure to reach it is a report, not a crash of the probe
        return f"unreachable: {type(error).__name__}"


# PERMANENT: a probe that raises fails /healthz (500) at once; by default kopf would retry it, and the request
# would hang instead of failing.
@kopf.on.probe(id="watches", errors=kopf.ErrorsMode.PERMANENT)
def watches_progress(**_: Any) -> dict[str, Any]:
    """Liveness: every watch stream made progress (an event, a bookmark, a listing) within the threshold;
    streams waiting for a missing CRD are reported, not failed."""
    health = watches.PROGRESS.health(watches.stale_after(os.environ))
    if not health.alive:
        raise kopf.PermanentError(health.failure())
    return health.summary()


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else the kubeconfig named by KUBECONFIG at login time."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
