"""Label and field selectors, as in list/watch query parameters and webhook configurations."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .registry import ResourceType

Matcher = Callable[[dict[str, Any]], bool]
FieldGetter = Callable[[dict[str, Any]], str]

_SET_TERM = re.compile(r"^\s*(!?)([\w./-]+)\s*(?:(in|notin)\s*\(([^)]*)\))?\s*$")


class SelectorError(ValueError):
    pass


def _split_terms(text: str) -> list[str]:
    terms, depth, current = [], 0, ""
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def _label_equals(key: str, value: str, negate: bool) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (labels.get(key) == value) != negate


def _label_in(key: str, allowed: set[str], negate: bool) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (labels.get(key) in allowed) != negate


def _label_exists(key: str, negate: bool) -> Callable[[dict[str, str]], bool]:
    return lambda labels: (key in labels) != negate


def parse_label_selector(text: str | None) -> Callable[[dict[str, str]], bool]:
    """Parse `a=b,c!=d,e in (f,g),!h,i` into a predicate over a labels mapping."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(text or ""):
        for op in ("!=", "==", "="):
            if op in term and " in " not in term and "notin" not in term:
                key, value = (part.strip() for part in term.split(op, 1))
                checks.append(_label_equals(key, value, negate=op == "!="))
                break
        else:
            match = _SET_TERM.match(term)
            if not match:
                raise SelectorError(f"unable to parse requirement: {term.strip()!r}")
            negated, key, op, values = match.groups()
            if op:
                allowed = {v.strip() for v in values.split(",") if v.strip()}
                checks.append(_label_in(key, allowed, negate=op != "in"))
            else:
                checks.append(_label_exists(key, negate=bool(negated)))
    return lambda labels: all(check(labels) for check in checks)


def match_label_selector(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A metav1.LabelSelector (matchLabels + matchExpressions); empty or None selects everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], set(expr.get("values") or [])
        if (
            (op == "In" and labels.get(key) not in values)
            or (op == "NotIn" and labels.get(key) in values)
            or (op == "Exists" and key not in labels)
            or (op == "DoesNotExist" and key in labels)
        ):
            return False
    return True


def field_value(obj: dict[str, Any], path: str) -> str:
    """A field's value as a field selector compares it ("" when absent, booleans as true/false)."""
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def _path(path: str) -> FieldGetter:
    return lambda obj: field_value(obj, path)


def _event_source(event: dict[str, Any]) -> str:
    return field_value(event, "source.component") or field_value(event, "reportingComponent")


def _events_v1_source(event: dict[str, Any]) -> str:
    return field_value(event, "deprecatedSource.component") or field_value(event, "reportingController")


_INVOLVED = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
# kube-apiserver's field label conversions: core/v1 Events, and events.k8s.io/v1 under their newer names
BUILTIN_FIELD_LABELS: dict[tuple[str, str], dict[str, FieldGetter]] = {
    ("", "events"): {
        **{f"involvedObject.{part}": _path(f"involvedObject.{part}") for part in _INVOLVED},
        "reason": _path("reason"),
        "type": _path("type"),
        "reportingComponent": _path("reportingComponent"),
        "source": _event_source,
    },
    ("events.k8s.io", "events"): {
        **{f"regarding.{part}": _path(f"regarding.{part}") for part in _INVOLVED},
        "reason": _path("reason"),
        "type": _path("type"),
        "reportingController": _path("reportingController"),
        "source": _events_v1_source,
    },
    ("", "namespaces"): {"status.phase": _path("status.phase")},
    ("", "secrets"): {"type": _path("type")},
}


def field_labels(rtype: ResourceType) -> dict[str, FieldGetter]:
    """The field labels a resource type accepts in a fieldSelector, each with how it reads an object."""
    builtin = BUILTIN_FIELD_LABELS.get((rtype.group, rtype.plural), {})  # by group: Events share a collection
    return {
        "metadata.name": _path("metadata.name"),
        "metadata.namespace": _path("metadata.namespace"),
        **{path: _path(path) for path in rtype.selectable_fields},
        **builtin,
    }


def _field_terms(text: str) -> list[str]:
    """Split on commas that are not escaped (a value escapes `\\`, `,` and `=` with a backslash)."""
    return [term for term in re.split(r"(?<!\\),", text) if term.strip()]


def _field_term(term: str) -> tuple[str, str, bool]:
    match = re.match(r"^\s*([^!=\s]+)\s*(!=|==|=)(.*)$", term)
    if not match:
        raise SelectorError(f"invalid selector: '{term}'; can't understand '{term}'")
    key, op, value = match.groups()
    return key, re.sub(r"\\(.)", r"\1", value.strip()), op == "!="


def _field_equals(getter: FieldGetter, value: str, negate: bool) -> Matcher:
    return lambda obj: (getter(obj) == value) != negate


def parse_field_selector(text: str | None, labels: Mapping[str, FieldGetter] | None = None) -> Matcher:
    """`metadata.name=x,metadata.namespace!=y`; ``labels`` are the resource's field labels (default: metadata's).
    An unknown label answers as kube-apiserver does: "field label not supported: <label>"."""
    known = (
        labels
        if labels is not None
        else {"metadata.name": _path("metadata.name"), "metadata.namespace": _path("metadata.namespace")}
    )
    checks: list[Matcher] = []
    for term in _field_terms(text or ""):
        key, value, negate = _field_term(term)
        if key not in known:
            raise SelectorError(f"field label not supported: {key}")
        checks.append(_field_equals(known[key], value, negate))
    return lambda obj: all(check(obj) for check in checks)
