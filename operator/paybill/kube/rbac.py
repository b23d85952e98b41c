"""RBAC as kube-apiserver evaluates it: request attributes, rule matching, escalation checks, bootstrap policy.

Pure functions over the stored Role, ClusterRole, RoleBinding and ClusterRoleBinding objects (read through a
``Store``); the server's gate (``access.py``) calls them. Messages follow the apiserver's own text
(``responsewriters.forbiddenMessage``, ``rbac/validation.ConfirmNoEscalation``) so clients and people read
what a real cluster would tell them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .auth import UserInfo
from .selectors import match_label_selector
from .store import Store

GROUP = "rbac.authorization.k8s.io"
ROLES, CLUSTER_ROLES = (GROUP, "roles"), (GROUP, "clusterroles")
ROLE_BINDINGS, CLUSTER_ROLE_BINDINGS = (GROUP, "rolebindings"), (GROUP, "clusterrolebindings")
PRIVILEGED_GROUP = "system:masters"
NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})

Rule = dict[str, Any]


@dataclass(frozen=True)
class Attributes:
    """What a request asks to do (the apiserver's ``authorizer.Attributes``)."""

    user: UserInfo
    verb: str
    resource_request: bool
    path: str = ""
    api_group: str = ""
    api_version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""

    @property
    def combined_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""


def request_attributes(user: UserInfo, method: str, path: str, query: dict[str, str]) -> Attributes:
    """Parse a URL as the apiserver's RequestInfoFactory does: resource requests live under /api/<v> and
    /apis/<group>/<v>; everything else (discovery, /version, /openapi, /healthz) is a non-resource path."""
    parts = [part for part in path.split("/") if part]
    verb = method.lower()
    if parts[:1] == ["api"] and len(parts) >= 3:
        group, version, rest = "", parts[1], parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 4:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return Attributes(user, verb, False, path="/" + "/".join(parts))
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    watching = query.get("watch") in ("true", "1")
    verb = {"post": "create", "put": "update", "patch": "patch"}.get(verb, verb)
    if method == "GET":
        verb = "watch" if watching else ("get" if name else "list")
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    return Attributes(
        user,
        verb,
        True,
        path="/" + "/".join(parts),
        api_group=group,
        api_version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
    )


# --- rule matching (rbac/v1 helpers) ----------------------------------------------------------------------------


def _has(values: Iterable[str] | None, value: str, wildcard: str = "*") -> bool:
    values = list(values or [])
    return wildcard in values or value in values


def _resource_matches(rule: Rule, combined: str, subresource: str) -> bool:
    for resource in rule.get("resources") or []:
        if resource in ("*", combined):
            return True
        if subresource and resource == f"*/{subresource}":
            return True
    return False


def _non_resource_url_matches(rule: Rule, path: str) -> bool:
    for url in rule.get("nonResourceURLs") or []:
        if url in ("*", path) or (url.endswith("*") and path.startswith(url.rstrip("*"))):
            return True
    return False


def rule_allows(rule: Rule, attributes: Attributes) -> bool:
    if not _has(rule.get("verbs"), attributes.verb):
        return False
    if not attributes.resource_request:
        return _non_resource_url_matches(rule, attributes.path)
    names = rule.get("resourceNames") or []
    return (
        _has(rule.get("apiGroups"), attributes.api_group)
        and _resource_matches(rule, attributes.combined_resource, attributes.subresource)
        and (not names or attributes.name in names)
    )


# --- resolving the rules that apply to a user --------------------------------------------------------------------


@dataclass(frozen=True)
class Grant:
    """One rule that applies to a user, and where it came from (for 'allowed by' reasons)."""

    rule: Rule
    source: str


@dataclass
class Resolution:
    grants: list[Grant] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _subject_applies(user: UserInfo, subject: dict[str, Any], namespace: str) -> bool:
    kind, name = subject.get("kind"), subject.get("name")
    if kind == "User":
        return user.username == name
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        sa_namespace = subject.get("namespace") or namespace
        return bool(sa_namespace) and user.username == f"system:serviceaccount:{sa_namespace}:{name}"
    return False


def _describe_subject(subject: dict[str, Any], namespace: str) -> str:
    if subject.get("kind") == "ServiceAccount":
        return f'ServiceAccount "{subject.get("name")}/{subject.get("namespace") or namespace}"'
    return f'{subject.get("kind")} "{subject.get("name")}"'


def cluster_role_rules(store: Store, role: dict[str, Any], seen: frozenset[str] = frozenset()) -> list[Rule]:
    """A ClusterRole's rules; an aggregated one has those of every ClusterRole its selectors match, aggregated
    ones included (the aggregation controller's result, computed when read)."""
    aggregation = role.get("aggregationRule")
    if not aggregation:
        return list(role.get("rules") or [])
    seen = seen | {role["metadata"]["name"]}
    selectors = aggregation.get("clusterRoleSelectors") or []
    rules: list[Rule] = []
    for other in sorted(store.list(CLUSTER_ROLES), key=lambda o: o["metadata"]["name"]):
        labels = other["metadata"].get("labels") or {}
        if other["metadata"]["name"] not in seen and any(match_label_selector(s, labels) for s in selectors):
            rules.extend(rule for rule in cluster_role_rules(store, other, seen) if rule not in rules)
    return rules


def role_ref_rules(store: Store, role_ref: dict[str, Any], namespace: str, singular: bool = True) -> list[Rule]:
    """The rules a binding's roleRef names; KeyError with the apiserver's not-found text if it is missing.
    The authorizer's listers name the resource in the singular, the registry in the plural."""
    kind, name = role_ref.get("kind"), role_ref.get("name") or ""
    if kind == "Role" and namespace:
        role = store.get(ROLES, namespace, name)
        if role is None:
            raise KeyError(f'role{"" if singular else "s"}.{GROUP} "{name}" not found')
        return list(role.get("rules") or [])
    if kind == "ClusterRole":
        cluster_role = store.get(CLUSTER_ROLES, None, name)
        if cluster_role is None:
            raise KeyError(f'clusterrole{"" if singular else "s"}.{GROUP} "{name}" not found')
        return cluster_role_rules(store, cluster_role)
    raise KeyError(f'unsupported role reference kind: "{kind}"')


def _bindings(store: Store, user: UserInfo, namespace: str) -> Iterator[tuple[dict[str, Any], str, str]]:
    """(binding, its namespace, source description) for every binding with a subject that is this user."""
    sources: list[tuple[tuple[str, str], str | None, str]] = [(CLUSTER_ROLE_BINDINGS, None, "ClusterRoleBinding")]
    if namespace:
        sources.append((ROLE_BINDINGS, namespace, "RoleBinding"))
    for key, in_namespace, kind in sources:
        for binding in sorted(store.list(key, in_namespace), key=lambda o: o["metadata"]["name"]):
            binding_namespace = in_namespace or ""
            subject = next(
                (s for s in binding.get("subjects") or [] if _subject_applies(user, s, binding_namespace)), None
            )
            if subject is None:
                continue
            name = binding["metadata"]["name"] + (f"/{binding_namespace}" if binding_namespace else "")
            ref = binding.get("roleRef") or {}
            yield (
                binding,
                binding_namespace,
                (
                    f'{kind} "{name}" of {ref.get("kind")} "{ref.get("name")}" to '
                    f"{_describe_subject(subject, binding_namespace)}"
                ),
            )


def _visit(store: Store, user: UserInfo, namespace: str, errors: list[str]) -> Iterator[Grant]:
    """The rules that apply to ``user`` in ``namespace``, cluster-wide ones first, lazily (VisitRulesFor);
    roles that cannot be resolved go to ``errors``."""
    for binding, binding_namespace, source in _bindings(store, user, namespace):
        try:
            rules = role_ref_rules(store, binding.get("roleRef") or {}, binding_namespace)
        except KeyError as missing:
            errors.append(str(missing.args[0]))
            continue
        yield from (Grant(rule, source) for rule in rules)


def resolve(store: Store, user: UserInfo, namespace: str) -> Resolution:
    """Every rule that applies to ``user`` in ``namespace`` (cluster-wide ones included), and resolution errors."""
    resolution = Resolution()
    resolution.grants.extend(_visit(store, user, namespace, resolution.errors))
    return resolution


def authorize(store: Store, attributes: Attributes) -> Decision:
    """Allow when a rule of a binding that applies to the user allows the request (the first one found); else
    deny (RBAC has no opinion), naming roles that could not be resolved."""
    if PRIVILEGED_GROUP in attributes.user.groups:
        return Decision(True)
    errors: list[str] = []
    for grant in _visit(store, attributes.user, attributes.namespace, errors):
        if rule_allows(grant.rule, attributes):
            return Decision(True, f"RBAC: allowed by {grant.source}")
    return Decision(False, f"RBAC: {_aggregate(errors)}" if errors else "")


def _aggregate(errors: list[str]) -> str:
    return errors[0] if len(errors) == 1 else "[" + ", ".join(errors) + "]"


def _go_quoted(values: Iterable[str]) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


def forbidden_message(attributes: Attributes, reason: str = "") -> str:
    """The apiserver's 403 text (responsewriters.Forbidden wrapped by apierrors.NewForbidden)."""
    user = attributes.user.username
    if not attributes.resource_request:
        message = f'forbidden: User "{user}" cannot {attributes.verb} path "{attributes.path}"'
    else:
        resource = attributes.combined_resource
        scope = f'in the namespace "{attributes.namespace}"' if attributes.namespace else "at the cluster scope"
        detail = (
            f'User "{user}" cannot {attributes.verb} resource "{resource}" in API group '
            f'"{attributes.api_group}" {scope}'
        )
        qualified = f"{attributes.resource}.{attributes.api_group}" if attributes.api_group else attributes.resource
        named = f'{qualified} "{attributes.name}"' if attributes.name else qualified
        message = f"{named} is forbidden: {detail}"
    return f"{message}: {reason}" if reason else message


# --- escalation prevention (ConfirmNoEscalation and Covers) ------------------------------------------------------


def _breakdown(rule: Rule) -> list[Rule]:
    """A rule as simple rules: one verb, group, resource and name each (validation.BreakdownRule)."""
    simple: list[Rule] = []
    for group in rule.get("apiGroups") or []:
        for resource in rule.get("resources") or []:
            for verb in rule.get("verbs") or []:
                names = rule.get("resourceNames") or []
                if names:
                    simple.extend(
                        {"apiGroups": [group], "resources": [resource], "verbs": [verb], "resourceNames": [name]}
                        for name in names
                    )
                else:
                    simple.append({"apiGroups": [group], "resources": [resource], "verbs": [verb]})
    for url in rule.get("nonResourceURLs") or []:
        for verb in rule.get("verbs") or []:
            simple.append({"nonResourceURLs": [url], "verbs": [verb]})
    return simple


def _resources_cover(owner: list[str], requested: list[str]) -> bool:
    if "*" in owner:
        return True
    for resource in requested:
        if resource in owner:
            continue
        subresource = resource.split("/", 1)[1] if "/" in resource else None
        if subresource is None or f"*/{subresource}" not in owner:
            return False
    return True


def _urls_cover(owner: list[str], requested: list[str]) -> bool:
    return all(
        any(o == url or o == "*" or (o.endswith("*") and url.startswith(o.rstrip("*"))) for o in owner)
        for url in requested
    )


def _rule_covers(owner: Rule, rule: Rule) -> bool:
    def all_in(key: str) -> bool:
        values = owner.get(key) or []
        return "*" in values or set(rule.get(key) or []) <= set(values)

    owner_names, names = owner.get("resourceNames") or [], rule.get("resourceNames") or []
    names_ok = not owner_names or (bool(names) and set(names) <= set(owner_names))
    return (
        all_in("verbs")
        and all_in("apiGroups")
        and _resources_cover(owner.get("resources") or [], rule.get("resources") or [])
        and _urls_cover(owner.get("nonResourceURLs") or [], rule.get("nonResourceURLs") or [])
        and names_ok
    )


def uncovered(owner_rules: list[Rule], rules: list[Rule]) -> list[Rule]:
    """The simple rules of ``rules`` that no owner rule covers."""
    return [
        simple
        for rule in rules
        for simple in _breakdown(rule)
        if not any(_rule_covers(owner, simple) for owner in owner_rules)
    ]


def compact_string(rule: Rule) -> str:
    """rbacv1helpers.CompactString."""
    parts = [
        f"{label}:{_go_quoted(rule[key])}"
        for label, key in (
            ("APIGroups", "apiGroups"),
            ("Resources", "resources"),
            ("NonResourceURLs", "nonResourceURLs"),
            ("ResourceNames", "resourceNames"),
            ("Verbs", "verbs"),
        )
        if rule.get(key)
    ]
    return "{" + ", ".join(parts) + "}"


def _compact(missing: list[Rule]) -> list[Rule]:
    """Simple rules that differ only in their verb, merged (CompactRules)."""
    merged: dict[tuple[Any, ...], Rule] = {}
    for rule in missing:
        key = tuple(tuple(rule.get(k) or ()) for k in ("apiGroups", "resources", "nonResourceURLs", "resourceNames"))
        if key in merged and not rule.get("nonResourceURLs"):
            merged[key]["verbs"] = merged[key]["verbs"] + [v for v in rule["verbs"] if v not in merged[key]["verbs"]]
        else:
            merged.setdefault(key, {k: list(v) for k, v in rule.items()})
    return list(merged.values())


def escalation_error(user: UserInfo, missing: list[Rule], errors: list[str]) -> str:
    lines = sorted({compact_string(rule) for rule in _compact(missing)})
    message = (
        f'user "{user.username}" (groups={_go_quoted(user.groups)}) is attempting to grant RBAC '
        "permissions not currently held:\n" + "\n".join(lines)
    )
    if errors:
        message += f"; resolution errors: [{', '.join(errors)}]"
    return message


# --- the default policy a real cluster bootstraps -----------------------------------------------------------------


def _cluster_role(
    name: str, rules: list[Rule], labels: dict[str, str] | None = None, aggregate_from: str | None = None
) -> dict[str, Any]:
    role: dict[str, Any] = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRole",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", **(labels or {})},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "rules": rules,
    }
    if aggregate_from:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {aggregate_from: "true"}}]}
    return role


def _cluster_binding(name: str, role: str, groups: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"},
        },
        "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": role},
        "subjects": [{"apiGroup": GROUP, "kind": "Group", "name": group} for group in groups],
    }


READ = ["get", "list", "watch"]
WRITE = ["create", "delete", "deletecollection", "patch", "update"]
DISCOVERY_URLS = [
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/openapi",
    "/openapi/*",
    "/readyz",
    "/version",
    "/version/",
]


def bootstrap_policy() -> list[dict[str, Any]]:
    """The default ClusterRoles and bindings a kube-apiserver creates at start (the subset Paybill's kinds use):
    cluster-admin for system:masters, discovery and self-reviews for every authenticated user, and the
    aggregated admin/edit/view user-facing roles."""
    namespaced_core = ["configmaps", "secrets", "serviceaccounts", "services", "pods", "events"]
    view_rules = [
        {
            "apiGroups": [""],
            "resources": [
                "configmaps",
                "serviceaccounts",
                "services",
                "pods",
                "events",
                "resourcequotas",
                "limitranges",
                "namespaces",
                "pods/status",
                "services/status",
                "resourcequotas/status",
                "namespaces/status",
            ],
            "verbs": READ,
        },
        {"apiGroups": ["apps"], "resources": ["deployments", "deployments/status"], "verbs": READ},
        {"apiGroups": ["batch"], "resources": ["jobs", "jobs/status"], "verbs": READ},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ},
    ]
    edit_rules = [
        {"apiGroups": [""], "resources": namespaced_core, "verbs": READ + WRITE},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": READ + WRITE},
        {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": READ + WRITE},
        {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": READ + WRITE},
        {"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["impersonate"]},
    ]
    admin_rules = [
        {"apiGroups": [GROUP], "resources": ["roles", "rolebindings"], "verbs": READ + WRITE},
        {"apiGroups": ["authorization.k8s.io"], "resources": ["localsubjectaccessreviews"], "verbs": ["create"]},
    ]
    return [
        _cluster_role(
            "cluster-admin",
            [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, {"nonResourceURLs": ["*"], "verbs": ["*"]}],
        ),
        _cluster_role("system:discovery", [{"nonResourceURLs": DISCOVERY_URLS, "verbs": ["get"]}]),
        _cluster_role(
            "system:public-info-viewer",
            [{"nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"]}],
        ),
        _cluster_role(
            "system:basic-user",
            [
                {"apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"]},
                {
                    "apiGroups": ["authorization.k8s.io"],
                    "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"],
                    "verbs": ["create"],
                },
            ],
        ),
        _cluster_role("admin", [], aggregate_from="rbac.authorization.k8s.io/aggregate-to-admin"),
        _cluster_role(
            "edit",
            [],
            {"rbac.authorization.k8s.io/aggregate-to-admin": "true"},
            aggregate_from="rbac.authorization.k8s.io/aggregate-to-edit",
        ),
        _cluster_role(
            "view",
            [],
            {"rbac.authorization.k8s.io/aggregate-to-edit": "true"},
            aggregate_from="rbac.authorization.k8s.io/aggregate-to-view",
        ),
        _cluster_role("system:aggregate-to-admin", admin_rules, {f"{GROUP}/aggregate-to-admin": "true"}),
        _cluster_role("system:aggregate-to-edit", edit_rules, {f"{GROUP}/aggregate-to-edit": "true"}),
        _cluster_role("system:aggregate-to-view", view_rules, {f"{GROUP}/aggregate-to-view": "true"}),
        _cluster_binding("cluster-admin", "cluster-admin", [PRIVILEGED_GROUP]),
        _cluster_binding("system:discovery", "system:discovery", ["system:authenticated"]),
        _cluster_binding("system:basic-user", "system:basic-user", ["system:authenticated"]),
        _cluster_binding(
            "system:public-info-viewer", "system:public-info-viewer", ["system:authenticated", "system:unauthenticated"]
        ),
    ]
