"""Operator-wide kopf settings and shared context (set once at startup)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from ..audit import AuditLog
from ..database import TenantDatabases
from ..kubeclient import Kube, load_config
from . import events
from .persistence import PREFIX, DigestDiffBaseStorage

DATABASE_URL_ENV = "PAYBILL_DATABASE_URL"
BACKUP_DIR_ENV = "PAYBILL_BACKUP_DIR"
STATE_DIR_ENV = "PAYBILL_STATE_DIR"
WORKER_LIMIT_ENV = "PAYBILL_WORKER_LIMIT"


def backup_directory(environ: Mapping[str, str]) -> Path:
    """Where final backups go: PAYBILL_BACKUP_DIR, else `backups` in the operator's state directory
    (PAYBILL_STATE_DIR, else $XDG_STATE_HOME/paybill, else ~/.local/state/paybill), never a shared temporary
    directory. It is made 0700 and files in it 0600 when the first backup is written."""
    if environ.get(BACKUP_DIR_ENV):
        return Path(environ[BACKUP_DIR_ENV])
    if environ.get(STATE_DIR_ENV):
        return Path(environ[STATE_DIR_ENV]) / "backups"
    home = Path(environ.get("HOME") or Path.home())
    return Path(environ.get("XDG_STATE_HOME") or home / ".local" / "state") / "paybill" / "backups"


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
    settings.peering.standalone = True
    settings.watching.server_timeout = 300
    settings.queueing.error_delays = [1, 2, 5, 10, 30, 60]
    # Objects are worked on by at most this many workers at once (the rest queue): at startup over
    # thousands of tenants, an unbounded burst keeps its high-water memory for good.
    settings.queueing.worker_limit = int(os.environ.get(WORKER_LIMIT_ENV) or 128)
    settings.queueing.idle_timeout = 0.5  # a worker holds its slot while idle: free it soon
    load_config()
    memo.kube = Kube()
    events.install(memo.kube)
    database_url = os.environ.get(DATABASE_URL_ENV) or None
    backup_dir = backup_directory(os.environ)
    memo.databases = TenantDatabases(database_url, backup_dir) if database_url else None
    memo.audit = AuditLog(memo.databases.connect) if memo.databases else None
    logger.info(
        "Paybill operator started; tenant database %s; backups in %s",
        "configured" if database_url else f"not configured (set {DATABASE_URL_ENV})",
        backup_dir,
    )


@kopf.on.probe(id="kube")
def kube_reachable(memo: kopf.Memo, **_: Any) -> str:
    return str(memo.kube.request("GET", "/version")["gitVersion"])


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else the kubeconfig named by KUBECONFIG at login time."""
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
