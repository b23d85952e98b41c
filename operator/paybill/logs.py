"""The operator's log lines: each one about an object names it (kind, namespace, name); a wait that kopf
retries (a handler's TemporaryError: a missing plan, a tenant still provisioning) is a WARNING, not an
ERROR, said once per quiet period while it repeats; text for people, or one JSON object per line for collectors
(`paybill operator --log-format json`)."""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

LOG_FORMATS = ("text", "json")
OBJECT_LOGGER = "kopf.objects"  # kopf logs everything about an object here, with the object in `k8s_ref`
RETRIED = " failed temporarily: "  # kopf's line for a TemporaryError it will retry (not the final ones)
REPEAT_QUIET_S = 300.0  # a retried wait's line (and Event) at most once per object and message in this long
REPEATS_KEPT = 4096  # (object, message) pairs remembered for that


def object_of(record: logging.LogRecord) -> dict[str, str] | None:
    """The Kubernetes object a record is about: kind, namespace (if namespaced) and name."""
    ref = getattr(record, "k8s_ref", None)
    if not isinstance(ref, dict) or not ref.get("name"):
        return None
    return {key: str(ref[key]) for key in ("kind", "namespace", "name") if ref.get(key)}


def describe(obj: dict[str, str]) -> str:
    where = f"{obj['namespace']}/{obj['name']}" if "namespace" in obj else obj["name"]
    return f"{obj.get('kind', '?')} {where}"


class ExpectedWaits(logging.Filter):
    """kopf logs a TemporaryError at ERROR (and posts it as an Error Event); a retried wait is a WARNING, said once
    per `quiet` seconds for the same object and message: the repeats in between (a workflow awaiting approval is
    looked at every few seconds, for hours) are DEBUG, so neither printed nor posted as Events."""

    def __init__(self, quiet: float = REPEAT_QUIET_S, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._quiet, self._clock = quiet, clock
        self._said: collections.OrderedDict[tuple[str, str], float] = collections.OrderedDict()
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or RETRIED not in (message := record.getMessage()):
            return True
        level = logging.WARNING if self._first_in_a_while(record, message) else logging.DEBUG
        record.levelno, record.levelname = level, logging.getLevelName(level)
        return logging.getLogger(record.name).isEnabledFor(level)  # handlers do not look at the logger's level

    def _first_in_a_while(self, record: logging.LogRecord, message: str) -> bool:
        ref = getattr(record, "k8s_ref", None)
        about = json.dumps(ref, sort_keys=True, default=str) if isinstance(ref, dict) else ""
        key, now = (about, message), self._clock()
        with self._lock:
            said = self._said.get(key)
            if said is not None and now - said < self._quiet:
                return False
            self._said[key] = now
            self._said.move_to_end(key)
            while len(self._said) > REPEATS_KEPT:
                self._said.popitem(last=False)
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: [Kind namespace/name] message`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        obj = object_of(record)
        line = super().formatMessage(record)
        if obj is None:
            return line
        head, _, message = line.partition(f"{record.name}: ")
        return f"{head}{record.name}: [{describe(obj)}] {message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, object, and the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "object": object_of(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def configure(log_format: str = "text", verbose: bool = False) -> None:
    """Log to stderr in `log_format`; expected waits as warnings (on kopf's object logger itself, so the
    Events kopf posts from these records are Warning Events too)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    objects = logging.getLogger(OBJECT_LOGGER)
    if not any(isinstance(existing, ExpectedWaits) for existing in objects.filters):
        objects.addFilter(ExpectedWaits())
    logging.captureWarnings(True)  # Python warnings become log lines (JSON too)
