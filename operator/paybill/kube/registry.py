"""Resource types the emulated API server serves: built-in kinds plus whatever CRDs register."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

CRD_KEY = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_KEY = ("", "namespaces")
ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    status_subresource: bool = False
    schema: dict[str, Any] | None = None  # openAPIV3Schema; None = built-in, accepted as sent
    printer_columns: tuple[dict[str, Any], ...] = ()
    description: str = ""
    custom: bool = False
    selectable_fields: tuple[str, ...] = field(default=())
    stored_as: tuple[str, str] | None = None  # another type's collection, converted on the way (Events)
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self) -> tuple[str, str]:
        """Identity of the stored collection, independent of the version served."""
        return self.stored_as or (self.group, self.plural)

    def discovery(self) -> list[dict[str, Any]]:
        entry = {
            "name": self.plural,
            "singularName": self.singular or self.kind.lower(),
            "kind": self.kind,
            "namespaced": self.namespaced,
            "verbs": list(self.verbs),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        entries = [entry]
        if self.status_subresource:
            entries.append(
                {
                    "name": f"{self.plural}/status",
                    "singularName": "",
                    "kind": self.kind,
                    "namespaced": self.namespaced,
                    "verbs": ["get", "patch", "update"],
                }
            )
        return entries


def _builtin(
    group: str,
    version: str,
    plural: str,
    kind: str,
    namespaced: bool,
    *,
    short: tuple[str, ...] = (),
    status: bool = False,
    description: str = "",
    verbs: tuple[str, ...] = ALL_VERBS,
) -> ResourceType:
    return ResourceType(
        group,
        version,
        plural,
        kind,
        namespaced,
        singular=kind.lower(),
        short_names=short,
        status_subresource=status,
        description=description,
        verbs=verbs,
    )


def _review(group: str, plural: str, kind: str, namespaced: bool = False) -> ResourceType:
    """A create-only review resource (answered by the server's access gate, never stored)."""
    return _builtin(group, "v1", plural, kind, namespaced, verbs=("create",))


BUILTINS: tuple[ResourceType, ...] = (
    _builtin(
        "",
        "v1",
        "namespaces",
        "Namespace",
        False,
        short=("ns",),
        status=True,
        description="Namespace provides a scope for names.",
    ),
    _builtin("", "v1", "secrets", "Secret", True, description="Secret holds secret data of a certain type."),
    _builtin("", "v1", "configmaps", "ConfigMap", True, short=("cm",), description="ConfigMap holds configuration."),
    _builtin("", "v1", "serviceaccounts", "ServiceAccount", True, short=("sa",)),
    _builtin("", "v1", "services", "Service", True, short=("svc",), status=True),
    _builtin("", "v1", "pods", "Pod", True, short=("po",), status=True),
    _builtin("", "v1", "resourcequotas", "ResourceQuota", True, short=("quota",), status=True),
    _builtin("", "v1", "limitranges", "LimitRange", True, short=("limits",)),
    _builtin("", "v1", "events", "Event", True, short=("ev",)),
    replace(_builtin("events.k8s.io", "v1", "events", "Event", True, short=("ev",)), stored_as=("", "events")),
    _builtin("rbac.authorization.k8s.io", "v1", "roles", "Role", True),
    _builtin("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False),
    _builtin("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False),
    _builtin("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", True, short=("netpol",)),
    _builtin("batch", "v1", "jobs", "Job", True, status=True),
    _builtin("apps", "v1", "deployments", "Deployment", True, short=("deploy",), status=True),
    _builtin("coordination.k8s.io", "v1", "leases", "Lease", True),
    _builtin("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, short=("pdb",), status=True),
    _builtin(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        False,
        short=("crd", "crds"),
        status=True,
    ),
    _builtin(
        "admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", False
    ),
    _builtin(
        "admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", False
    ),
    _review("authorization.k8s.io", "selfsubjectaccessreviews", "SelfSubjectAccessReview"),
    _review("authorization.k8s.io", "selfsubjectrulesreviews", "SelfSubjectRulesReview"),
    _review("authorization.k8s.io", "subjectaccessreviews", "SubjectAccessReview"),
    _review("authorization.k8s.io", "localsubjectaccessreviews", "LocalSubjectAccessReview", namespaced=True),
    _review("authentication.k8s.io", "selfsubjectreviews", "SelfSubjectReview"),
    _review("authentication.k8s.io", "tokenreviews", "TokenReview"),
)


def from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The served versions of a CustomResourceDefinition object."""
    spec = crd["spec"]
    names = spec["names"]
    served = []
    for version in spec.get("versions", []):
        if not version.get("served", True):
            continue
        schema = (version.get("schema") or {}).get("openAPIV3Schema") or {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
        served.append(
            ResourceType(
                group=spec["group"],
                version=version["name"],
                plural=names["plural"],
                kind=names["kind"],
                namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                singular=names.get("singular", names["kind"].lower()),
                short_names=tuple(names.get("shortNames", ())),
                categories=tuple(names.get("categories", ())),
                status_subresource="status" in (version.get("subresources") or {}),
                schema=schema,
                printer_columns=tuple(version.get("additionalPrinterColumns", ())),
                description=schema.get("description", ""),
                custom=True,
                selectable_fields=tuple(f["jsonPath"].lstrip(".") for f in version.get("selectableFields", ())),
            )
        )
    return served


class Registry:
    """Served resource types by (group, version, plural), rebuilt as CRDs come and go."""

    def __init__(self) -> None:
        self._types: dict[tuple[str, str, str], ResourceType] = {}
        self._by_crd: dict[str, list[ResourceType]] = {}
        for rtype in BUILTINS:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype

    def get(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._types.get((group, version, plural))

    def by_key(self, key: tuple[str, str]) -> ResourceType:
        """A served version of the stored collection (group, plural)."""
        return next(rtype for rtype in self._types.values() if rtype.key == key)

    def all(self) -> list[ResourceType]:
        return list(self._types.values())

    def groups(self) -> dict[str, list[str]]:
        """Group name → served versions (the core group "" excluded)."""
        result: dict[str, list[str]] = {}
        for rtype in self._types.values():
            if rtype.group and rtype.version not in result.setdefault(rtype.group, []):
                result[rtype.group].append(rtype.version)
        return result

    def in_version(self, group: str, version: str) -> list[ResourceType]:
        return [r for r in self._types.values() if r.group == group and r.version == version]

    def register_crd(self, crd: dict[str, Any]) -> list[ResourceType]:
        self.unregister_crd(crd["metadata"]["name"])
        served = from_crd(crd)
        for rtype in served:
            self._types[(rtype.group, rtype.version, rtype.plural)] = rtype
        self._by_crd[crd["metadata"]["name"]] = served
        return served

    def unregister_crd(self, name: str) -> list[ResourceType]:
        removed = self._by_crd.pop(name, [])
        for rtype in removed:
            self._types.pop((rtype.group, rtype.version, rtype.plural), None)
        return removed
