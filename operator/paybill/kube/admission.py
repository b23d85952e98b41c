"""Admission webhooks: the emulated apiserver calls mutating and validating webhooks like the real one."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import ssl
import urllib.parse
import uuid
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from .auth import REQUESTER, UserInfo
from .patching import PatchError, json_patch
from .registry import ResourceType
from .selectors import match_label_selector
from .tls import ClientCertificate

logger = logging.getLogger(__name__)


@dataclass
class AdmissionDenied(Exception):
    code: int
    message: str
    reason: str = ""


@dataclass(frozen=True)
class AdmissionRequest:
    rtype: ResourceType
    operation: str  # CREATE | UPDATE | DELETE
    name: str
    namespace: str | None
    subresource: str | None
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    dry_run: bool
    namespace_labels: dict[str, str]
    user: UserInfo = field(default_factory=REQUESTER.get)  # who asked for the write


def _rule_matches(rule: dict[str, Any], request: AdmissionRequest) -> bool:
    def matches(values: list[str] | None, value: str) -> bool:
        return values is not None and ("*" in values or value in values)

    resource = request.rtype.plural + (f"/{request.subresource}" if request.subresource else "")
    resources = rule.get("resources") or []
    resource_ok = resource in resources or "*/*" in resources or (not request.subresource and "*" in resources)
    scope = rule.get("scope", "*")
    scope_ok = scope == "*" or (scope == "Namespaced") == request.rtype.namespaced
    return (
        matches(rule.get("apiGroups"), request.rtype.group)
        and matches(rule.get("apiVersions"), request.rtype.version)
        and matches(rule.get("operations"), request.operation)
        and resource_ok
        and scope_ok
    )


def _webhook_applies(webhook: dict[str, Any], request: AdmissionRequest) -> bool:
    if not any(_rule_matches(rule, request) for rule in webhook.get("rules") or []):
        return False
    if request.rtype.namespaced and not match_label_selector(
        webhook.get("namespaceSelector"), request.namespace_labels
    ):
        return False
    target = request.obj or request.old or {}
    return match_label_selector(webhook.get("objectSelector"), target.get("metadata", {}).get("labels") or {})


def _loopback_url(client_config: dict[str, Any]) -> str:
    url = client_config.get("url")
    if not url:
        raise ValueError(
            "only clientConfig.url webhooks are supported by the emulated API server "
            "(there is no in-cluster service network)"
        )
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"webhook host {host!r} is not a loopback address")
    return url


def _trust(client_config: dict[str, Any], identity: ClientCertificate | None = None) -> ssl.SSLContext | bool:
    """An HTTPS webhook is trusted as kube-apiserver trusts it: through its caBundle, else the system's CAs; with an
    identity, its client certificate is presented (kube-apiserver's admission kubeconfig client-certificate)."""
    bundle = client_config.get("caBundle")
    if not bundle and identity is None:
        return True
    context = ssl.create_default_context(cadata=base64.b64decode(bundle).decode() if bundle else None)
    if identity is not None:
        identity.load_into(context)
    return context


def _review(request: AdmissionRequest, uid: str) -> dict[str, Any]:
    rtype = request.rtype
    gvk = {"group": rtype.group, "version": rtype.version, "kind": rtype.kind}
    gvr = {"group": rtype.group, "version": rtype.version, "resource": rtype.plural}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "subResource": request.subresource,
            "name": request.name,
            "namespace": request.namespace,
            "operation": request.operation,
            "userInfo": request.user.to_json(),
            "object": request.obj,
            "oldObject": request.old,
            "dryRun": request.dry_run,
            "options": None,
        },
    }


class Admission:
    """Runs the registered webhook configurations against a write."""

    def __init__(self, identity: ClientCertificate | None = None) -> None:
        self._session: aiohttp.ClientSession | None = None
        self.identity = identity  # presented to HTTPS webhooks, as an admission kubeconfig's client-certificate

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _call(self, webhook: dict[str, Any], request: AdmissionRequest) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        uid = str(uuid.uuid4())
        client_config = webhook.get("clientConfig") or {}
        url = _loopback_url(client_config)
        timeout = aiohttp.ClientTimeout(total=webhook.get("timeoutSeconds", 10))
        trust = _trust(client_config, self.identity)
        async with self._session.post(url, json=_review(request, uid), timeout=timeout, ssl=trust) as response:
            if response.status != 200:
                raise ValueError(f"webhook answered HTTP {response.status}")
            body = await response.json(content_type=None)
        answer = body.get("response") or {}
        if answer.get("uid") != uid:
            raise ValueError("webhook response uid does not match the request uid")
        return answer

    async def review(
        self, configurations: list[dict[str, Any]], request: AdmissionRequest, mutating: bool
    ) -> dict[str, Any] | None:
        """Call every matching webhook; return the (possibly mutated) object or raise AdmissionDenied."""
        obj = request.obj
        for configuration in configurations:
            for webhook in configuration.get("webhooks") or []:
                current = AdmissionRequest(**{**request.__dict__, "obj": obj})
                if not _webhook_applies(webhook, current):
                    continue
                name = webhook.get("name", "")
                try:
                    answer = await self._call(webhook, current)
                except Exception as exc:
                    if webhook.get("failurePolicy", "Fail") == "Ignore":
                        logger.warning("webhook %s failed and is ignored (failurePolicy=Ignore): %s", name, exc)
                        continue
                    raise AdmissionDenied(
                        500, f'Internal error occurred: failed calling webhook "{name}": {exc}', "InternalError"
                    ) from exc
                if not answer.get("allowed"):
                    status = answer.get("status") or {}
                    message = status.get("message") or "without explanation"
                    raise AdmissionDenied(
                        max(int(status.get("code") or 400), 400),
                        f'admission webhook "{name}" denied the request: {message}',
                        str(status.get("reason") or ""),  # as kube-apiserver: the webhook's, if it gave one
                    )
                if mutating and answer.get("patch") and obj is not None:
                    try:
                        obj = json_patch(obj, json.loads(base64.b64decode(answer["patch"])))
                    except (PatchError, ValueError) as exc:
                        raise AdmissionDenied(
                            500,
                            f'Internal error occurred: webhook "{name}" returned an invalid patch: {exc}',
                            "InternalError",
                        ) from exc
        return obj
