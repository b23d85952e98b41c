"""The emulated API server's gate: authenticate, impersonate, authorize every request (401/403 as a real
server answers), prevent privilege escalation through Roles and bindings, and serve the review APIs
(SelfSubjectAccessReview, SubjectAccessReview, LocalSubjectAccessReview, SelfSubjectRulesReview,
SelfSubjectReview, TokenReview) and TokenRequest.

Denied requests are kept (``denied``) and, when a test asks for it, every authorization decision
(``recorder``), so a suite can prove a role is both enough and no more than needed.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import kmock

from . import protobuf, rbac
from .auth import (
    DEFAULT_TOKEN_SECONDS,
    MIN_TOKEN_SECONDS,
    REQUESTER,
    ImpersonationCheck,
    ImpersonationError,
    Tokens,
    UserInfo,
    impersonate,
)
from .rbac import Attributes, Decision
from .store import Store
from .tls import ServingCertificate, loopback_certificate

logger = logging.getLogger(__name__)

AUTHORIZATION_GROUP = "authorization.k8s.io"
AUTHENTICATION_GROUP = "authentication.k8s.io"
SERVICE_ACCOUNTS = ("", "serviceaccounts")
SERVED_VERSIONS = {(AUTHENTICATION_GROUP, "selfsubjectreviews"): ("v1", "v1beta1")}  # as kube-apiserver 1.31
GC_FIELDS = ("ownerReferences", "finalizers", "resourceVersion", "managedFields")
FULL_AUTHORITY: list[rbac.Rule] = [
    {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
    {"nonResourceURLs": ["*"], "verbs": ["*"]},
]


class Refused(kmock.KubernetesError):
    """A request the gate answers itself with a Status (401, 403, 400, 405, 422)."""


def _unauthorized() -> Refused:
    return Refused(status=401, reason="Unauthorized", message="Unauthorized", details={})


def forbidden(attributes: Attributes, reason: str = "") -> Refused:
    details = (
        {"name": attributes.name, "group": attributes.api_group, "kind": attributes.resource}
        if attributes.resource_request
        else {}
    )
    return Refused(
        status=403,
        reason="Forbidden",
        message=rbac.forbidden_message(attributes, reason),
        details={k: v for k, v in details.items() if v},
    )


def _forbidden_object(resource: str, name: str, message: str) -> Refused:
    return Refused(
        status=403,
        reason="Forbidden",
        message=f'{resource}.{rbac.GROUP} "{name}" is forbidden: {message}',
        details={"name": name, "group": rbac.GROUP, "kind": resource},
    )


def _invalid(kind: str, group: str, field_path: str, value: Any, detail: str) -> Refused:
    message = f'{kind}.{group} "" is invalid: {field_path}: Invalid value: {value!r}: {detail}'
    return Refused(
        status=422,
        reason="Invalid",
        message=message,
        details={
            "group": group,
            "kind": kind,
            "causes": [
                {"reason": "FieldValueInvalid", "message": f"Invalid value: {value!r}: {detail}", "field": field_path}
            ],
        },
    )


@dataclass
class AccessControl:
    tokens: Tokens = field(default_factory=Tokens)
    certificate: ServingCertificate = field(default_factory=loopback_certificate)  # HTTPS, as kube-apiserver
    denied: deque[tuple[Attributes, str]] = field(default_factory=lambda: deque(maxlen=1000))
    recorder: list[tuple[Attributes, Decision]] | None = None  # every decision, when a test sets a list

    # --- the per-request gate ----------------------------------------------------------------------------------

    def admit(self, raw: Any, store: Store) -> UserInfo:
        """Authenticate and authorize a request (and its impersonation); the user it acts as."""
        actor = self.tokens.authenticate(
            raw.headers.get("Authorization"), lambda ns, name: store.get(SERVICE_ACCOUNTS, ns, name)
        )
        if actor is None:
            raise _unauthorized()
        try:
            user = impersonate(raw.headers, lambda check: self._impersonation_allowed(store, actor, check)) or actor
        except ImpersonationError as error:
            if error.check is None:  # the apiserver answers a malformed impersonation as an internal error
                raise Refused(
                    status=500,
                    reason="InternalError",
                    details={},
                    message=f'Internal Server Error: "{raw.path_qs}": {error.message}',
                ) from None
            raise forbidden(_impersonation_attributes(actor, error.check)) from None
        REQUESTER.set(user)
        attributes = rbac.request_attributes(user, raw.method, raw.path, dict(raw.query))
        decision = self.authorize(store, attributes)
        if not decision.allowed:
            raise forbidden(attributes, decision.reason)
        return user

    def authorize(self, store: Store, attributes: Attributes, record: bool = True, refuses: bool = True) -> Decision:
        """RBAC's decision; ``record``: the user really asked this (not a review); ``refuses``: a denial refuses
        the request (an escalate or bind check does not: holding the permissions granted is enough)."""
        decision = rbac.authorize(store, attributes)
        if record and self.recorder is not None:
            self.recorder.append((attributes, decision))
        if not decision.allowed and record and refuses:
            self.denied.append((attributes, rbac.forbidden_message(attributes, decision.reason)))
            logger.info("RBAC DENY: %s", rbac.forbidden_message(attributes, decision.reason))
        return decision

    def _impersonation_allowed(self, store: Store, actor: UserInfo, check: ImpersonationCheck) -> bool:
        return self.authorize(store, _impersonation_attributes(actor, check)).allowed

    # --- the review and token APIs ------------------------------------------------------------------------------

    def serve(self, raw: Any, data: Any, body: bytes, store: Store) -> dict[str, Any] | None:
        """The answer to a review or TokenRequest (HTTP 201), None for every other request. ``data`` is the JSON
        body the server parsed; ``body`` the bytes, read here when they are protobuf (kubectl 1.32+)."""
        method = raw.method
        attributes = rbac.request_attributes(REQUESTER.get(), method, raw.path, {})
        if not attributes.resource_request or (attributes.name and attributes.subresource != "token"):
            return None
        key = (attributes.api_group, attributes.resource)
        handlers = {
            (AUTHORIZATION_GROUP, "selfsubjectaccessreviews"): self._self_access_review,
            (AUTHORIZATION_GROUP, "subjectaccessreviews"): self._access_review,
            (AUTHORIZATION_GROUP, "localsubjectaccessreviews"): self._access_review,
            (AUTHORIZATION_GROUP, "selfsubjectrulesreviews"): self._rules_review,
            (AUTHENTICATION_GROUP, "selfsubjectreviews"): self._self_review,
            (AUTHENTICATION_GROUP, "tokenreviews"): self._token_review,
        }
        if attributes.subresource == "token" and key == SERVICE_ACCOUNTS:
            if method != "POST":
                raise Refused(
                    status=405,
                    reason="MethodNotAllowed",
                    message="the server does not allow this method on the requested resource",
                )
            return self._token_request(attributes, _body(raw, data, body), store)
        if key not in handlers or attributes.name or attributes.api_version not in SERVED_VERSIONS.get(key, ("v1",)):
            return None
        if method != "POST":
            raise Refused(
                status=405,
                reason="MethodNotAllowed",
                message="the server does not allow this method on the requested resource",
            )
        review = _body(raw, data, body)
        kind = {
            "selfsubjectaccessreviews": "SelfSubjectAccessReview",
            "subjectaccessreviews": "SubjectAccessReview",
            "localsubjectaccessreviews": "LocalSubjectAccessReview",
            "selfsubjectrulesreviews": "SelfSubjectRulesReview",
            "selfsubjectreviews": "SelfSubjectReview",
            "tokenreviews": "TokenReview",
        }[attributes.resource]
        review.update(apiVersion=f"{attributes.api_group}/{attributes.api_version}", kind=kind)
        review["metadata"] = {**(review.get("metadata") or {}), "creationTimestamp": None}
        review["status"] = handlers[key](review.get("spec") or {}, attributes, store)
        return review

    def _review_decision(self, store: Store, user: UserInfo, spec: dict[str, Any]) -> dict[str, Any]:
        resource, non_resource = spec.get("resourceAttributes"), spec.get("nonResourceAttributes")
        if resource is not None:
            attributes = Attributes(
                user,
                resource.get("verb") or "",
                True,
                api_group=resource.get("group") or "",
                api_version=resource.get("version") or "",
                namespace=resource.get("namespace") or "",
                resource=resource.get("resource") or "",
                subresource=resource.get("subresource") or "",
                name=resource.get("name") or "",
            )
        elif non_resource is not None:
            attributes = Attributes(user, non_resource.get("verb") or "", False, path=non_resource.get("path") or "")
        else:
            raise _invalid(
                "SelfSubjectAccessReview",
                AUTHORIZATION_GROUP,
                "spec.resourceAttributes",
                "null",
                "exactly one of nonResourceAttributes or resourceAttributes must be specified",
            )
        decision = self.authorize(store, attributes, record=False)
        status: dict[str, Any] = {"allowed": decision.allowed}
        if decision.reason:
            status["reason"] = decision.reason
        return status

    def _self_access_review(self, spec: dict[str, Any], attributes: Attributes, store: Store) -> dict[str, Any]:
        return self._review_decision(store, attributes.user, spec)

    def _access_review(self, spec: dict[str, Any], attributes: Attributes, store: Store) -> dict[str, Any]:
        kind = "LocalSubjectAccessReview" if attributes.namespace else "SubjectAccessReview"
        if not spec.get("user") and not spec.get("groups"):
            raise _invalid(
                kind, AUTHORIZATION_GROUP, "spec.user", "", "at least one of user or group must be specified"
            )
        if attributes.namespace and (spec.get("resourceAttributes") or {}).get("namespace") != attributes.namespace:
            raise _invalid(
                kind,
                AUTHORIZATION_GROUP,
                "spec.resourceAttributes.namespace",
                (spec.get("resourceAttributes") or {}).get("namespace") or "",
                "must match metadata.namespace",
            )
        extra = tuple((k, tuple(v)) for k, v in sorted((spec.get("extra") or {}).items()))
        subject = UserInfo(spec.get("user") or "", spec.get("uid") or "", tuple(spec.get("groups") or ()), extra)
        return self._review_decision(store, subject, spec)

    def _rules_review(self, spec: dict[str, Any], attributes: Attributes, store: Store) -> dict[str, Any]:
        if not spec.get("namespace"):
            raise _invalid(
                "SelfSubjectRulesReview", AUTHORIZATION_GROUP, "spec.namespace", "", "no namespace on request"
            )
        resolution = rbac.resolve(store, attributes.user, spec["namespace"])
        resource_rules = [
            {k: rule.get(k) or [] for k in ("verbs", "apiGroups", "resources", "resourceNames")}
            for rule in (grant.rule for grant in resolution.grants)
            if not rule.get("nonResourceURLs")
        ]
        non_resource_rules = [
            {"verbs": rule.get("verbs") or [], "nonResourceURLs": rule["nonResourceURLs"]}
            for rule in (grant.rule for grant in resolution.grants)
            if rule.get("nonResourceURLs")
        ]
        status: dict[str, Any] = {
            "resourceRules": resource_rules,
            "nonResourceRules": non_resource_rules,
            "incomplete": bool(resolution.errors),
        }
        if resolution.errors:
            status["evaluationError"] = "; ".join(resolution.errors)
        return status

    @staticmethod
    def _self_review(spec: dict[str, Any], attributes: Attributes, store: Store) -> dict[str, Any]:
        return {"userInfo": attributes.user.to_json()}

    def _token_review(self, spec: dict[str, Any], attributes: Attributes, store: Store) -> dict[str, Any]:
        user = self.tokens.authenticate(
            f"Bearer {spec.get('token') or ''}", lambda ns, name: store.get(SERVICE_ACCOUNTS, ns, name)
        )
        if user is None:
            return {"authenticated": False, "user": {}, "error": "invalid bearer token"}
        return {"authenticated": True, "user": user.to_json(), "audiences": spec.get("audiences") or []}

    def _token_request(self, attributes: Attributes, body: dict[str, Any], store: Store) -> dict[str, Any]:
        account = store.get(SERVICE_ACCOUNTS, attributes.namespace, attributes.name)
        if account is None:
            raise Refused(
                status=404,
                reason="NotFound",
                message=f'serviceaccounts "{attributes.name}" not found',
                details={"name": attributes.name, "kind": "serviceaccounts"},
            )
        spec = dict(body.get("spec") or {})
        seconds = int(spec.get("expirationSeconds") or DEFAULT_TOKEN_SECONDS)
        if seconds < MIN_TOKEN_SECONDS:
            raise _invalid(
                "TokenRequest",
                AUTHENTICATION_GROUP,
                "spec.expirationSeconds",
                seconds,
                "may not specify a duration less than 10 minutes",
            )
        token, expires = self.tokens.issue(account, seconds)
        spec.update(
            expirationSeconds=seconds,
            audiences=spec.get("audiences") or ["https://kubernetes.default.svc"],
            boundObjectRef=spec.get("boundObjectRef"),
        )
        return {
            "apiVersion": f"{AUTHENTICATION_GROUP}/v1",
            "kind": "TokenRequest",
            "metadata": {"name": attributes.name, "namespace": attributes.namespace, "creationTimestamp": None},
            "spec": spec,
            "status": {"token": token, "expirationTimestamp": expires},
        }

    # --- escalation prevention on RBAC writes -------------------------------------------------------------------

    def check_escalation(
        self, key: tuple[str, str], obj: dict[str, Any], old: dict[str, Any] | None, store: Store
    ) -> None:
        """Refuse a Role/ClusterRole or binding write that grants more than the writer holds, unless the writer
        may escalate (roles) or bind (bindings), as the apiserver's RBAC storage does."""
        if key not in (rbac.ROLES, rbac.CLUSTER_ROLES, rbac.ROLE_BINDINGS, rbac.CLUSTER_ROLE_BINDINGS):
            return
        user = REQUESTER.get()
        if rbac.PRIVILEGED_GROUP in user.groups:
            return
        if (
            key in (rbac.ROLE_BINDINGS, rbac.CLUSTER_ROLE_BINDINGS)
            and old is not None
            and old.get("roleRef") != obj.get("roleRef")
        ):
            kind = "RoleBinding" if key == rbac.ROLE_BINDINGS else "ClusterRoleBinding"
            raise _invalid(kind, rbac.GROUP, "roleRef", str(obj.get("roleRef")), "cannot change roleRef")
        if old is not None and _only_gc_fields_changed(old, obj):
            return
        meta = obj["metadata"]
        namespace = meta.get("namespace") or ""
        try:
            if key in (rbac.ROLES, rbac.CLUSTER_ROLES):
                self._check_role(store, user, key[1], obj, namespace, meta["name"] if old is not None else "")
            else:
                self._check_binding(store, user, key[1], obj, namespace)
        except Refused as refused:
            write = Attributes(
                user,
                "create" if old is None else "update",
                True,
                api_group=rbac.GROUP,
                api_version="v1",
                namespace=namespace,
                resource=key[1],
                name=meta["name"],
            )
            self.denied.append((write, str(refused.message)))
            raise

    def _check_role(
        self, store: Store, user: UserInfo, resource: str, role: dict[str, Any], namespace: str, request_name: str
    ) -> None:
        escalate = Attributes(
            user,
            "escalate",
            True,
            api_group=rbac.GROUP,
            api_version="*",
            namespace=namespace,
            resource=resource,
            name=request_name,
        )
        if self.authorize(store, escalate, refuses=False).allowed:
            return
        rules = list(role.get("rules") or []) + (FULL_AUTHORITY if role.get("aggregationRule") else [])
        self._confirm_no_escalation(store, user, namespace, rules, resource, role["metadata"]["name"])

    def _check_binding(
        self, store: Store, user: UserInfo, resource: str, binding: dict[str, Any], namespace: str
    ) -> None:
        ref = binding.get("roleRef") or {}
        bind = Attributes(
            user,
            "bind",
            True,
            api_group=ref.get("apiGroup") or "",
            namespace=namespace,
            resource={"Role": "roles", "ClusterRole": "clusterroles"}.get(ref.get("kind") or "", ""),
            name=ref.get("name") or "",
        )
        if bind.resource and self.authorize(store, bind, refuses=False).allowed:
            return
        name = binding["metadata"]["name"]
        try:
            rules = rbac.role_ref_rules(store, ref, namespace, singular=False)
        except KeyError as missing:
            raise _forbidden_object(resource, name, str(missing.args[0])) from None
        self._confirm_no_escalation(store, user, namespace, rules, resource, name)

    def _confirm_no_escalation(
        self, store: Store, user: UserInfo, namespace: str, rules: list[rbac.Rule], resource: str, name: str
    ) -> None:
        resolution = rbac.resolve(store, user, namespace)
        missing = rbac.uncovered([grant.rule for grant in resolution.grants], rules)
        if missing:
            raise _forbidden_object(resource, name, rbac.escalation_error(user, missing, resolution.errors))


def _body(raw: Any, data: Any, body: bytes) -> dict[str, Any]:
    """A review's JSON body, from protobuf if it came so (400 for a body that is neither)."""
    if raw.content_type == protobuf.MEDIA_TYPE:
        try:
            return protobuf.review_from_protobuf(body)
        except (protobuf.ProtobufError, UnicodeDecodeError) as error:
            raise Refused(
                status=400, reason="BadRequest", message=f"the request body is not valid: {error}", details={}
            ) from None
    return dict(data) if isinstance(data, dict) else {}


def _impersonation_attributes(actor: UserInfo, check: ImpersonationCheck) -> Attributes:
    resource, _, subresource = check.resource.partition("/")
    return Attributes(
        actor,
        "impersonate",
        True,
        api_group=check.api_group,
        namespace=check.namespace,
        resource=resource,
        subresource=subresource,
        name=check.name,
    )


def _only_gc_fields_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    def strip(obj: dict[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in GC_FIELDS}
        return {**obj, "metadata": meta}

    return strip(old) == strip(new)
