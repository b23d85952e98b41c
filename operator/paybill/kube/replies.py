"""What every part of the emulated API server answers with: Kubernetes Status errors and JSON objects."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiohttp.web
import kmock
from kmock._internal import rendering

from . import conversion
from .registry import ResourceType
from .schema import FieldError
from .selectors import SelectorError, field_labels, parse_field_selector, parse_label_selector
from .store import Store

if TYPE_CHECKING:
    from .routing import Route


class ApiError(kmock.KubernetesError):
    """An error answered as a Kubernetes Status object."""


def status_error(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> ApiError:
    return ApiError(status=code, reason=reason, message=message, details=details or {})


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return status_error(
        404,
        "NotFound",
        f'{qualified(rtype)} "{name}" not found',
        {"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def qualified(rtype: ResourceType) -> str:
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def invalid(rtype: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    summary = errors[0] if len(errors) == 1 else "[" + ", ".join(str(e) for e in errors) + "]"
    return status_error(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {summary}',
        {"name": name, "group": rtype.group, "kind": rtype.kind, "causes": [e.cause() for e in errors]},
    )


class Replies:
    """The answers and read helpers the server's parts share (a mixin: EmulatedApiServer holds the state)."""

    store: Store

    @staticmethod
    def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> aiohttp.web.Response:
        return aiohttp.web.Response(
            text=json.dumps(payload, separators=(",", ":")),
            status=status,
            content_type="application/json",
            headers=headers,
        )

    @staticmethod
    def _served(rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the requested version presents it (the store keeps each as it was written)."""
        return conversion.served(rtype.api_version, obj)

    def _matcher(self, request: rendering.Request, route: Route) -> Callable[[dict[str, Any]], bool]:
        try:
            labels = parse_label_selector(request.params.get("labelSelector"))
            fields = parse_field_selector(request.params.get("fieldSelector"), field_labels(route.rtype))
        except SelectorError as exc:
            raise status_error(400, "BadRequest", str(exc)) from None
        return lambda obj: labels(obj["metadata"].get("labels") or {}) and fields(self._served(route.rtype, obj))
