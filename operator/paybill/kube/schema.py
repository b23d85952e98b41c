"""Structural schema handling like the apiserver's: prune unknown fields, apply defaults, validate
(types, enums, patterns, bounds, required, CEL x-kubernetes-validations) with field paths."""

from __future__ import annotations

import copy
import functools
import json
import re
from dataclasses import dataclass
from typing import Any

import cel

_MISSING = object()
TYPES = {"object": dict, "array": list, "string": str, "boolean": bool}


@dataclass(frozen=True)
class FieldError:
    reason: str  # FieldValueRequired | FieldValueInvalid | FieldValueNotSupported | FieldValueTooLong ...
    field: str
    message: str

    def cause(self) -> dict[str, str]:
        return {"reason": self.reason, "message": self.message, "field": self.field}

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else key


def _render(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return f'"{"object" if isinstance(value, dict) else "array"}"'
    return json.dumps(value)


def prune(value: Any, schema: dict[str, Any], path: str = "") -> tuple[Any, list[str]]:
    """Drop fields the schema does not declare; return the pruned value and the dropped paths."""
    if schema.get("x-kubernetes-preserve-unknown-fields") and "properties" not in schema:
        return value, []
    dropped: list[str] = []
    if isinstance(value, dict) and schema.get("type") == "object":
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        result = {}
        for key, item in value.items():
            if props is not None and key in props:
                result[key], lost = prune(item, props[key], _path(path, key))
            elif isinstance(extra, dict):
                result[key], lost = prune(item, extra, _path(path, key))
            elif (
                extra is True or schema.get("x-kubernetes-preserve-unknown-fields") or (props is None and extra is None)
            ):
                result[key], lost = item, []
            else:
                dropped.append(_path(path, key))
                continue
            dropped += lost
        return result, dropped
    if isinstance(value, list) and "items" in schema:
        result_list = []
        for index, item in enumerate(value):
            pruned, lost = prune(item, schema["items"], _path(path, index))
            result_list.append(pruned)
            dropped += lost
        return result_list, dropped
    return value, dropped


def apply_defaults(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict) and schema.get("type") == "object":
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = apply_defaults(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in value:
                value[key] = apply_defaults(value[key], extra)
    elif isinstance(value, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in value]
    return value


def validate(value: Any, schema: dict[str, Any], old: Any = _MISSING, path: str = "") -> list[FieldError]:
    errors: list[FieldError] = []
    _validate(value, schema, old, path, errors)
    return errors


def _type_ok(value: Any, schema: dict[str, Any]) -> bool:
    expected = schema.get("type")
    if schema.get("x-kubernetes-int-or-string"):
        return isinstance(value, (int, str)) and not isinstance(value, bool)
    if expected is None:
        return True
    if expected == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if expected == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, TYPES.get(expected, object))


def _validate(value: Any, schema: dict[str, Any], old: Any, path: str, errors: list[FieldError]) -> None:
    if value is None:
        if not schema.get("nullable") and not schema.get("x-kubernetes-preserve-unknown-fields"):
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    path,
                    f'Invalid value: "null": {path} in body must be of type {schema.get("type", "object")}: "null"',
                )
            )
        return
    if not _type_ok(value, schema):
        shown = type(value).__name__ if not isinstance(value, (dict, list)) else _render(value)
        errors.append(
            FieldError(
                "FieldValueTypeInvalid",
                path,
                f"Invalid value: {_render(value)}: {path} in body must be of type "
                f"{schema.get('type')}: {json.dumps(shown)}",
            )
        )
        return
    if "enum" in schema and value not in schema["enum"]:
        supported = ", ".join(json.dumps(v) for v in schema["enum"])
        errors.append(
            FieldError(
                "FieldValueNotSupported", path, f"Unsupported value: {_render(value)}: supported values: {supported}"
            )
        )
    if isinstance(value, str):
        _check_string(value, schema, path, errors)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        _check_number(value, schema, path, errors)
    elif isinstance(value, list):
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(
                FieldError(
                    "FieldValueTooMany", path, f"Too many: {len(value)}: must have at most {schema['maxItems']} items"
                )
            )
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {len(value)}: {path} in body should have at least {schema['minItems']} items",
                )
            )
        for index, item in enumerate(value):
            _validate(item, schema.get("items", {}), _MISSING, _path(path, index), errors)
        errors += list_type_errors(value, schema, path)
    elif isinstance(value, dict):
        if "maxProperties" in schema and len(value) > schema["maxProperties"]:
            errors.append(
                FieldError(
                    "FieldValueTooMany",
                    path,
                    f"Too many: {len(value)}: must have at most {schema['maxProperties']} items",
                )
            )
        if "minProperties" in schema and len(value) < schema["minProperties"]:
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {len(value)}: {path} in body should have at least "
                    f"{schema['minProperties']} properties",
                )
            )
        for name in schema.get("required", ()):
            if name not in value:
                errors.append(FieldError("FieldValueRequired", _path(path, name), "Required value"))
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        old_dict = old if isinstance(old, dict) else {}
        for key, item in value.items():
            sub = props.get(key, extra if isinstance(extra, dict) else None)
            if sub is not None:
                _validate(item, sub, old_dict.get(key, _MISSING), _path(path, key), errors)
    if not errors and schema.get("x-kubernetes-validations"):
        _check_rules(value, schema["x-kubernetes-validations"], old, path, errors)


def list_type_errors(items: list[Any], schema: dict[str, Any], path: str) -> list[FieldError]:
    """x-kubernetes-list-type: a set's items and a map's keys are unique; the second appearance of each is a
    Duplicate value, rendered as kube-apiserver does (listtype.ValidateListSetsAndMaps)."""
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        values = items
    elif list_type == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        values = [{key: item[key] for key in keys if key in item} if isinstance(item, dict) else {} for item in items]
    else:
        return []
    seen: dict[str, int] = {}
    errors = []
    for index, value in enumerate(values):
        identity = json.dumps(value, sort_keys=True)
        seen[identity] = seen.get(identity, 0) + 1
        if seen[identity] == 2:
            errors.append(FieldError("FieldValueDuplicate", _path(path, index), f"Duplicate value: {_go(value)}"))
    return errors


def _go(value: Any, nested: bool = False) -> str:
    """A JSON value as Go's field errors print it: %q for a string, %v for a number or bool, %#v for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (int, float)):
        return repr(value)
    if value is None:
        return "interface {}(nil)" if nested else "null"
    if isinstance(value, dict):
        fields = ", ".join(f"{json.dumps(k, ensure_ascii=False)}:{_go(v, True)}" for k, v in sorted(value.items()))
        return f"map[string]interface {{}}{{{fields}}}"
    return f"[]interface {{}}{{{', '.join(_go(v, True) for v in value)}}}"


def _check_string(value: str, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        errors.append(
            FieldError("FieldValueTooLong", path, f"Too long: may not be more than {schema['maxLength']} bytes")
        )
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(
            FieldError(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_render(value)}: {path} in body should be at least {schema['minLength']} chars long",
            )
        )
    if "pattern" in schema and not _regex(schema["pattern"]).search(value):
        errors.append(
            FieldError(
                "FieldValueInvalid",
                path,
                f"Invalid value: {_render(value)}: {path} in body should match '{schema['pattern']}'",
            )
        )


def _check_number(value: float, schema: dict[str, Any], path: str, errors: list[FieldError]) -> None:
    if "minimum" in schema:
        exclusive = schema.get("exclusiveMinimum") is True
        if value < schema["minimum"] or (exclusive and value == schema["minimum"]):
            relation = "greater than" if exclusive else "greater than or equal to"
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {value}: {path} in body should be {relation} {schema['minimum']}",
                )
            )
    if "maximum" in schema:
        exclusive = schema.get("exclusiveMaximum") is True
        if value > schema["maximum"] or (exclusive and value == schema["maximum"]):
            relation = "less than" if exclusive else "less than or equal to"
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    path,
                    f"Invalid value: {value}: {path} in body should be {relation} {schema['maximum']}",
                )
            )


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


@functools.lru_cache(maxsize=1024)
def _program(rule: str) -> Any:
    return cel.compile(rule)


def _check_rules(value: Any, rules: list[dict[str, Any]], old: Any, path: str, errors: list[FieldError]) -> None:
    for rule in rules:
        expression = rule["rule"]
        transition = "oldSelf" in expression
        if transition and old is _MISSING:
            continue  # transition rules only run on updates of an existing value
        context = {"self": value, **({"oldSelf": old} if transition else {})}
        try:
            passed = _program(expression).execute(context)
        except KeyError:
            passed = False  # a missing field: CEL reports "no such key", which fails the rule
        except Exception as exc:  # a broken rule is the CRD author's error, reported like the apiserver
            errors.append(FieldError("FieldValueInvalid", path or "<root>", f"Invalid value: rule error: {exc}"))
            continue
        if passed is not True:
            message = rule.get("message") or f"failed rule: {expression}"
            shown = _render(value) if not isinstance(value, (dict, list)) else '"object"'
            errors.append(
                FieldError(
                    "FieldValueInvalid",
                    _path(path, rule["fieldPath"].lstrip(".")) if rule.get("fieldPath") else path,
                    f"Invalid value: {shown}: {message}",
                )
            )
