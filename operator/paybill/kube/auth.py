"""Authentication for the emulated API server: bearer tokens, ServiceAccount tokens, impersonation.

As a kube-apiserver with anonymous authentication disabled: a request without a known token is answered 401.
The admin token maps to a member of ``system:masters`` (what a cluster's admin kubeconfig holds); other users
get static tokens; ServiceAccounts get bound tokens through the TokenRequest API (``kubectl create token``),
valid while that very ServiceAccount (same uid) exists and until they expire.
"""

from __future__ import annotations

import datetime
import secrets
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

AUTHENTICATED = "system:authenticated"
SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"
SERVICE_ACCOUNTS_GROUP = "system:serviceaccounts"
MIN_TOKEN_SECONDS = 600
DEFAULT_TOKEN_SECONDS = 3600


@dataclass(frozen=True)
class UserInfo:
    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The user.Info of AdmissionReview.request.userInfo and SelfSubjectReview.status.userInfo."""
        info: dict[str, Any] = {"username": self.username, "groups": list(self.groups)}
        if self.uid:
            info["uid"] = self.uid
        if self.extra:
            info["extra"] = {key: list(values) for key, values in self.extra}
        return info


ADMIN = UserInfo("kubernetes-admin", groups=("system:masters", AUTHENTICATED))
NOBODY = UserInfo("system:anonymous", groups=("system:unauthenticated",))

# The user of the request being served (set by the server's gate; read by admission and escalation checks).
REQUESTER: ContextVar[UserInfo] = ContextVar("paybill_kube_requester", default=NOBODY)


def service_account_username(namespace: str, name: str) -> str:
    return f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}"


def service_account_groups(namespace: str) -> tuple[str, ...]:
    return (SERVICE_ACCOUNTS_GROUP, f"{SERVICE_ACCOUNTS_GROUP}:{namespace}")


def service_account_user(namespace: str, name: str, uid: str = "") -> UserInfo:
    return UserInfo(service_account_username(namespace, name), uid, (*service_account_groups(namespace), AUTHENTICATED))


def parse_service_account(username: str) -> tuple[str, str] | None:
    """(namespace, name) of a ServiceAccount username, None for any other user."""
    if not username.startswith(SERVICE_ACCOUNT_PREFIX):
        return None
    namespace, _, name = username.removeprefix(SERVICE_ACCOUNT_PREFIX).partition(":")
    return (namespace, name) if namespace and name and ":" not in name else None


@dataclass(frozen=True)
class BoundToken:
    namespace: str
    name: str
    uid: str
    expires: float  # time.time()


ServiceAccountLookup = Callable[[str, str], "dict[str, Any] | None"]


@dataclass
class Tokens:
    """Bearer token → identity. Tokens are random (secrets.token_urlsafe); in memory, or saved by ``changed``
    (the server's state directory) whenever one is issued, so that they outlive a restart."""

    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    _static: dict[str, UserInfo] = field(default_factory=dict)
    _bound: dict[str, BoundToken] = field(default_factory=dict)
    changed: Callable[[], None] | None = None

    def add_user(self, username: str, groups: tuple[str, ...] = (), uid: str = "") -> str:
        """A static token for a user (as a token file on a real server); system:authenticated is added."""
        token = secrets.token_urlsafe(32)
        self._static[token] = UserInfo(username, uid, (*groups, AUTHENTICATED))
        self._saved()
        return token

    def _saved(self) -> None:
        if self.changed is not None:
            self.changed()

    def to_json(self) -> dict[str, Any]:
        now = time.time()
        return {
            "admin": self.admin_token,
            "static": {
                token: {"username": user.username, "uid": user.uid, "groups": list(user.groups)}
                for token, user in self._static.items()
            },
            "bound": {
                token: {"namespace": b.namespace, "name": b.name, "uid": b.uid, "expires": b.expires}
                for token, b in self._bound.items()
                if b.expires > now
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokens:
        return cls(
            admin_token=str(data["admin"]),
            _static={
                token: UserInfo(str(u["username"]), str(u["uid"]), tuple(u["groups"]))
                for token, u in data["static"].items()
            },
            _bound={
                token: BoundToken(str(b["namespace"]), str(b["name"]), str(b["uid"]), float(b["expires"]))
                for token, b in data["bound"].items()
            },
        )

    def issue(self, service_account: dict[str, Any], seconds: int) -> tuple[str, str]:
        """A bound token for a ServiceAccount object: (token, expirationTimestamp)."""
        meta = service_account["metadata"]
        token = secrets.token_urlsafe(32)
        expires = time.time() + seconds
        self._bound[token] = BoundToken(meta["namespace"], meta["name"], meta["uid"], expires)
        self._saved()
        stamp = datetime.datetime.fromtimestamp(int(expires), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return token, stamp

    def authenticate(self, authorization: str | None, lookup: ServiceAccountLookup) -> UserInfo | None:
        """The user an Authorization header proves, or None (401)."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        if secrets.compare_digest(token, self.admin_token):
            return ADMIN
        if token in self._static:
            return self._static[token]
        bound = self._bound.get(token)
        if bound is None:
            return None
        account = lookup(bound.namespace, bound.name)
        if bound.expires < time.time() or account is None or account["metadata"].get("uid") != bound.uid:
            del self._bound[token]
            return None
        return service_account_user(bound.namespace, bound.name, bound.uid)


# --- impersonation (the apiserver's WithImpersonation filter) ---------------------------------------------------


@dataclass(frozen=True)
class ImpersonationCheck:
    """One authorization the acting user needs: verb impersonate on (group, resource, namespace, name)."""

    api_group: str
    resource: str
    name: str
    namespace: str = ""


class ImpersonationError(Exception):
    def __init__(self, check: ImpersonationCheck | None, message: str = "") -> None:
        super().__init__(message)
        self.check = check
        self.message = message


def impersonation_checks(
    user: str | None, groups: list[str], uid: str | None, extra: dict[str, list[str]]
) -> list[ImpersonationCheck]:
    checks: list[ImpersonationCheck] = []
    if user is not None:
        account = parse_service_account(user)
        checks.append(
            ImpersonationCheck("", "serviceaccounts", account[1], account[0])
            if account
            else ImpersonationCheck("", "users", user)
        )
    checks.extend(ImpersonationCheck("", "groups", group) for group in groups)
    if uid is not None:
        checks.append(ImpersonationCheck("authentication.k8s.io", "uids", uid))
    for key, values in extra.items():
        checks.extend(ImpersonationCheck("authentication.k8s.io", f"userextras/{key}", value) for value in values)
    return checks


def impersonated_user(user: str, groups: list[str], uid: str | None, extra: dict[str, list[str]]) -> UserInfo:
    """The identity a request acts as once every impersonation was authorized."""
    account = parse_service_account(user)
    if account and not groups:
        groups = list(service_account_groups(account[0]))
    if user != NOBODY.username and not {AUTHENTICATED, "system:unauthenticated"} & set(groups):
        groups = [*groups, AUTHENTICATED]
    return UserInfo(user, uid or "", tuple(groups), tuple((k, tuple(v)) for k, v in sorted(extra.items())))


def impersonate(headers: Any, authorized: Callable[[ImpersonationCheck], bool]) -> UserInfo | None:
    """The impersonated user of a request with Impersonate-* headers (None without them); raises
    ImpersonationError naming the first check the acting user fails, as the apiserver answers 403."""
    user = headers.get("Impersonate-User")
    groups = list(headers.getall("Impersonate-Group", []))
    uid = headers.get("Impersonate-Uid")
    extra: dict[str, list[str]] = {}
    for header, value in headers.items():
        if header.lower().startswith("impersonate-extra-"):
            extra.setdefault(header[len("impersonate-extra-") :].lower(), []).append(value)
    if user is None and not groups and uid is None and not extra:
        return None
    if user is None:
        raise ImpersonationError(None, f"requested {_describe(groups, uid, extra)} without impersonating a user")
    for check in impersonation_checks(user, groups, uid, extra):
        if not authorized(check):
            raise ImpersonationError(check)
    return impersonated_user(user, groups, uid, extra)


def _describe(groups: list[str], uid: str | None, extra: dict[str, list[str]]) -> str:
    parts = [f"groups {groups}" if groups else "", f"uid {uid}" if uid else "", f"extra {extra}" if extra else ""]
    return ", ".join(part for part in parts if part)
