"""The chart's admission webhook configurations, made callable by the emulated API server, which has no Service
network: each webhook's `clientConfig.service` becomes the loopback URL of an operator running in this process,
over HTTPS with a certificate for 127.0.0.1 (the chart's mode: PAYBILL_WEBHOOK_CERT_DIR, configurations not
registered by the operator). Names, rules, paths, failurePolicy and timeouts are the chart's."""

from __future__ import annotations

import base64
import copy
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from paybill.kube.tls import loopback_certificate
from paybill.kubeclient import Kube

CONFIGURATIONS = ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def serve_webhooks_over_tls(directory: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, bytes]:
    """Environment for the operator's webhook server as the chart sets it, on loopback: (port, CA in PEM)."""
    serving = loopback_certificate()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    (directory / "tls.crt").write_bytes(serving.certificate)
    (directory / "ca.crt").write_bytes(serving.certificate_authority)
    key = os.open(directory / "tls.key", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(key, "wb") as file:
        file.write(serving.key)
    port = free_port()
    monkeypatch.setenv("PAYBILL_WEBHOOK_CERT_DIR", str(directory))
    monkeypatch.setenv("PAYBILL_WEBHOOK_ADDR", "127.0.0.1")
    monkeypatch.setenv("PAYBILL_WEBHOOK_PORT", str(port))
    monkeypatch.delenv("PAYBILL_WEBHOOK_HOST", raising=False)
    return port, serving.certificate_authority


def on_loopback(configuration: dict[str, Any], port: int, certificate_authority: bytes) -> dict[str, Any]:
    """The chart's configuration with each webhook's Service replaced by https://127.0.0.1:<port><its path>."""
    moved = copy.deepcopy(configuration)
    for webhook in moved["webhooks"]:
        service = webhook["clientConfig"]["service"]
        webhook["clientConfig"] = {
            "url": f"https://127.0.0.1:{port}{service['path']}",
            "caBundle": base64.b64encode(certificate_authority).decode(),
        }
    return moved


def register_on_loopback(kube: Kube, docs: list[dict[str, Any]], port: int, certificate_authority: bytes) -> None:
    for doc in docs:
        if doc["kind"] in CONFIGURATIONS:
            kube.apply(on_loopback(doc, port, certificate_authority))
