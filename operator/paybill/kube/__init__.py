"""An emulated Kubernetes API server (built on kmock) that real kopf, kubectl and clients talk to."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp.test_utils
import kmock
import kubernetes
import yaml

from ..kubeclient import Kube
from .persistence import StateDirError
from .rbac import bootstrap_policy
from .server import EmulatedApiServer

SYSTEM_NAMESPACES: list[dict[str, Any]] = [
    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    for name in ("default", "kube-system", "kube-public")
]


@contextlib.asynccontextmanager
async def serve(
    host: str = "127.0.0.1", port: int | None = None, api: EmulatedApiServer | None = None
) -> AsyncIterator[tuple[EmulatedApiServer, str]]:
    """Run an emulated API server on loopback; yield it and its base URL."""
    api = api if api is not None else EmulatedApiServer()  # kmock handlers are falsy until they see requests
    api.load(bootstrap_policy())  # the default ClusterRoles and bindings a kube-apiserver creates at start
    server_cls = _tls_server(api.access.certificate.server_context())
    async with api, kmock.Server(api, host=host, port=port, server_cls=server_cls) as server:
        yield api, str(server.url).rstrip("/")


@contextlib.contextmanager
def serve_in_thread(
    seed: list[dict[str, Any]] | None = None, api: EmulatedApiServer | None = None, port: int | None = None
) -> Iterator[tuple[EmulatedApiServer, str]]:
    """Run an emulated API server on its own event loop in a thread, so blocking clients (the `kubernetes`
    package, kubectl, a kopf runner) can talk to it from this one. ``port``: a fixed one (a restart on the
    same address), else one the kernel picks."""
    ready = threading.Event()
    stop: asyncio.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    result: dict[str, Any] = {}

    async def main() -> None:
        nonlocal stop, loop
        stop, loop = asyncio.Event(), asyncio.get_running_loop()
        try:
            async with serve(port=port, api=api) as (server, url):
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
        loop.call_soon_threadsafe(result["server"].stop_serving)
        loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=30)


def _tls_server(context: ssl.SSLContext) -> type[aiohttp.test_utils.RawTestServer]:
    """kmock's aiohttp test server, serving HTTPS with ``context``."""

    class TlsServer(aiohttp.test_utils.RawTestServer):
        async def start_server(self, loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:
            await super().start_server(loop=loop, ssl=context, **kwargs)

    return TlsServer


def write_kubeconfig(
    path: Path,
    url: str,
    certificate_authority: bytes,
    token: str,
    context: str = "paybill-emulated",
    namespace: str = "default",
) -> Path:
    """A kubeconfig (mode 0600) for the emulated API server: HTTPS on loopback trusting its CA, a bearer token.
    The admin token (``api.access.tokens.admin_token``) acts as a member of system:masters, as a cluster's
    admin does; see :func:`write_admin_kubeconfig`."""
    ca_data = base64.b64encode(certificate_authority).decode()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": context,
        "clusters": [{"name": context, "cluster": {"server": url, "certificate-authority-data": ca_data}}],
        "users": [{"name": context, "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": context, "user": context, "namespace": namespace}}],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable by others
    with os.fdopen(descriptor, "w") as file:
        file.write(yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def write_admin_kubeconfig(path: Path, url: str, api: EmulatedApiServer) -> Path:
    """The cluster admin's kubeconfig (group system:masters) for a running emulated API server."""
    return write_kubeconfig(path, url, api.access.certificate.certificate_authority, api.access.tokens.admin_token)


def service_account_token(kube: Kube, namespace: str, name: str, seconds: int = 86400) -> str:
    """A bound token for a ServiceAccount through the TokenRequest API (as `kubectl create token`)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": seconds}}
    answer = kube.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", request)
    return str(answer["status"]["token"])


def write_service_account_kubeconfig(
    admin_kubeconfig: Path, namespace: str, name: str, path: Path, seconds: int = 86400
) -> Path:
    """A kubeconfig acting as ServiceAccount ``namespace/name``, its token requested with ``admin_kubeconfig``."""
    kube = Kube(kubernetes.config.new_client_from_config(config_file=str(admin_kubeconfig)))
    admin = yaml.safe_load(admin_kubeconfig.read_text())
    cluster = admin["clusters"][0]["cluster"]
    return write_kubeconfig(
        path,
        cluster["server"],
        base64.b64decode(cluster["certificate-authority-data"]),
        service_account_token(kube, namespace, name, seconds),
        context=f"{name}@paybill-emulated",
        namespace=namespace,
    )


__all__ = [
    "SYSTEM_NAMESPACES",
    "EmulatedApiServer",
    "StateDirError",
    "serve",
    "serve_in_thread",
    "service_account_token",
    "write_admin_kubeconfig",
    "write_kubeconfig",
    "write_service_account_kubeconfig",
]
