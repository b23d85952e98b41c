"""A small generic client over the official `kubernetes` package: paths, CRUD, apply by manifest."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import kubernetes
from kubernetes.client.exceptions import ApiException


class KubeError(RuntimeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def load_config() -> None:
    """In-cluster service account if present, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    try:
        kubernetes.config.load_incluster_config()
    except kubernetes.config.ConfigException:
        # Read KUBECONFIG now: the kubernetes package captured its default at import time.
        kubernetes.config.load_kube_config(config_file=os.environ.get("KUBECONFIG"))


def resource_path(
    api_version: str, plural: str, namespace: str | None = None, name: str | None = None, subresource: str | None = None
) -> str:
    base = f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"
    path = f"{base}/namespaces/{namespace}/{plural}" if namespace else f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


class Kube:
    def __init__(self, api_client: kubernetes.client.ApiClient | None = None) -> None:
        self.api = api_client or kubernetes.client.ApiClient()
        self._plurals: dict[tuple[str, str], tuple[str, bool]] = {}

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        content_type: str = "application/json",
        query: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Any:
        params = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            body=body,
            header_params={"Accept": "application/json", "Content-Type": content_type},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*params, _request_timeout=timeout)
            response.read()
        except ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason)) from None
        if response.status >= 400:
            raise KubeError(response.status, _message(response.data, response.reason))
        return json.loads(response.data) if response.data else None

    def watch(
        self,
        api_version: str,
        plural: str,
        resource_version: str,
        label_selector: str | None = None,
        timeout_seconds: int = 60,
        namespace: str | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Watch events of a collection (all namespaces, or `namespace`'s) from `resource_version`, until the server
        ends it."""
        query = {
            "watch": "1",
            "resourceVersion": resource_version,
            "timeoutSeconds": str(timeout_seconds),
            "allowWatchBookmarks": "true",
            **({"labelSelector": label_selector} if label_selector else {}),
        }
        params = self.api.param_serialize(
            "GET",
            resource_path(api_version, plural, namespace),
            query_params=list(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            response = self.api.call_api(*params, _request_timeout=timeout_seconds + 10)
        except ApiException as exc:
            raise KubeError(exc.status or 0, str(exc.reason)) from None
        stream = response.response
        try:
            if stream.status >= 400:
                raise KubeError(stream.status, _message(stream.read(), stream.reason))
            for line in stream:
                if line.strip():
                    yield json.loads(line)
        finally:
            stream.release_conn()

    def get(self, api_version: str, plural: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return self.request("GET", resource_path(api_version, plural, namespace, name))
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def list(self, api_version: str, plural: str, namespace: str | None = None) -> list[dict[str, Any]]:
        return self.request("GET", resource_path(api_version, plural, namespace))["items"]

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        plural, namespaced = self.plural_of(manifest["apiVersion"], manifest["kind"])
        namespace = manifest["metadata"].get("namespace") if namespaced else None
        return self.request("POST", resource_path(manifest["apiVersion"], plural, namespace), manifest)

    def merge_patch(
        self,
        api_version: str,
        plural: str,
        name: str,
        patch: dict[str, Any],
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        return self.request(
            "PATCH",
            resource_path(api_version, plural, namespace, name, subresource),
            patch,
            content_type="application/merge-patch+json",
        )

    def delete(self, api_version: str, plural: str, name: str, namespace: str | None = None) -> None:
        try:
            self.request("DELETE", resource_path(api_version, plural, namespace, name))
        except KubeError as exc:
            if exc.status != 404:
                raise

    def plural_of(self, api_version: str, kind: str) -> tuple[str, bool]:
        """(plural, namespaced) of a kind, from discovery."""
        if (api_version, kind) not in self._plurals:
            listing = self.request("GET", f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}")
            for resource in listing["resources"]:
                if "/" not in resource["name"]:
                    self._plurals[(api_version, resource["kind"])] = (resource["name"], resource["namespaced"])
        if (api_version, kind) not in self._plurals:
            raise KubeError(404, f"no resource of kind {kind} is served in {api_version}")
        return self._plurals[(api_version, kind)]

    def apply(self, manifest: dict[str, Any]) -> str:
        """Create, or merge-patch the spec and metadata of, an object. Returns 'created' or 'configured'."""
        plural, namespaced = self.plural_of(manifest["apiVersion"], manifest["kind"])
        meta = manifest["metadata"]
        namespace = meta.get("namespace") if namespaced else None
        if self.get(manifest["apiVersion"], plural, meta["name"], namespace) is None:
            self.create(manifest)
            return "created"
        patch = {k: v for k, v in manifest.items() if k not in ("status", "apiVersion", "kind")}
        self.merge_patch(manifest["apiVersion"], plural, meta["name"], patch, namespace)
        return "configured"


def _message(data: bytes | None, reason: str | None) -> str:
    try:
        return str(json.loads(data or b"").get("message") or reason)
    except (TypeError, ValueError, AttributeError):
        return str(reason)
