"""Label and field selectors, as in list/watch query parameters and webhook configurations."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Matcher = Callable[[dict[str, Any]], bool]

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
        if (op == "In" and labels.get(key) not in values) or (op == "NotIn" and labels.get(key) in values) or \
                (op == "Exists" and key not in labels) or (op == "DoesNotExist" and key in labels):
            return False
    return True


def _field_value(obj: dict[str, Any], path: str) -> Any:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _field_equals(key: str, value: str, negate: bool) -> Matcher:
    return lambda obj: (str(_field_value(obj, key) or "") == value) != negate


def parse_field_selector(text: str | None, allowed: tuple[str, ...] = ()) -> Matcher:
    """`metadata.name=x,metadata.namespace!=y` (plus any selectable fields of the resource)."""
    checks: list[Matcher] = []
    for term in _split_terms(text or ""):
        negate = "!=" in term
        key, value = (part.strip() for part in re.split(r"!=|==|=", term, maxsplit=1))
        if key not in ("metadata.name", "metadata.namespace", *allowed):
            raise SelectorError(f'field label not supported: {key}')
        checks.append(_field_equals(key, value, negate))
    return lambda obj: all(check(obj) for check in checks)
