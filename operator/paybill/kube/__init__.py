"""An emulated Kubernetes API server (built on kmock) that real kopf, kubectl and clients talk to."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

import kmock
import yaml

from .server import EmulatedApiServer


@contextlib.asynccontextmanager
async def serve(host: str = "127.0.0.1", port: int | None = None,
                api: EmulatedApiServer | None = None) -> AsyncIterator[tuple[EmulatedApiServer, str]]:
    """Run an emulated API server on loopback; yield it and its base URL."""
    api = api or EmulatedApiServer()
    async with api, kmock.Server(api, host=host, port=port) as server:
        yield api, str(server.url).rstrip("/")


def write_kubeconfig(path: Path, url: str, context: str = "paybill-emulated") -> Path:
    """A kubeconfig for the emulated API server (plain HTTP on loopback, no credentials)."""
    config = {
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": url}}],
        "users": [{"name": context, "user": {}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": "default"}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)
    return path


__all__ = ["EmulatedApiServer", "serve", "write_kubeconfig"]
