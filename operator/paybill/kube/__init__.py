"""An emulated Kubernetes API server (built on kmock) that real kopf, kubectl and clients talk to."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kmock
import yaml

from .server import EmulatedApiServer

SYSTEM_NAMESPACES: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
                                           for name in ("default", "kube-system", "kube-public")]


@contextlib.asynccontextmanager
async def serve(host: str = "127.0.0.1", port: int | None = None,
                api: EmulatedApiServer | None = None) -> AsyncIterator[tuple[EmulatedApiServer, str]]:
    """Run an emulated API server on loopback; yield it and its base URL."""
    api = api if api is not None else EmulatedApiServer()  # kmock handlers are falsy until they see requests
    async with api, kmock.Server(api, host=host, port=port) as server:
        yield api, str(server.url).rstrip("/")


@contextlib.contextmanager
def serve_in_thread(seed: list[dict[str, Any]] | None = None,
                    api: EmulatedApiServer | None = None) -> Iterator[tuple[EmulatedApiServer, str]]:
    """Run an emulated API server on its own event loop in a thread, so blocking clients (the `kubernetes`
    package, kubectl, a kopf runner) can talk to it from this one."""
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    result: dict[str, Any] = {}

    async def main() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            async with serve(api=api) as (server, url):
                server.load(seed or [])
                result.update(server=server, url=url)
                ready.set()
                await stop.wait()
        except BaseException as exc:
            result["error"] = exc
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name="emulated-apiserver", daemon=True)
    thread.start()
    ready.wait(timeout=30)
    if "error" in result or "server" not in result:
        raise RuntimeError(f"the emulated API server did not start: {result.get('error')}")
    try:
        yield result["server"], result["url"]
    finally:
        assert loop is not None and stop is not None
        loop.call_soon_threadsafe(result["server"].close_watches)
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


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


__all__ = ["SYSTEM_NAMESPACES", "EmulatedApiServer", "serve", "serve_in_thread", "write_kubeconfig"]
