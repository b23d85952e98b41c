"""The webhook server for the operator's own admission webhooks: kopf's server, answering those reviews directly.

kopf's WebhookServer still listens (TLS, certificate renewal) and yields the URL and CA bundle kopf registers with
the webhook configurations (failurePolicy, rules and paths are kopf's, from the handlers' decorators). A review
for a webhook id this server has an answer for skips kopf's admission machinery (body wrappers, a deep copy of the
body, a diff, handler bookkeeping, a JSON patch computed by diffing two copies): the request is parsed with orjson,
answered by that function, and the response written with orjson. Any other webhook id goes to kopf as before.

The wire format is kopf's: the response echoes apiVersion, kind and uid; a refusal carries status {message, code};
a request without userInfo or without an object is a 400, one for another resource a 404; an answer that raises
refuses the request with code 500 (fail closed: nothing is admitted on an error).
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp.web
import kopf
import orjson

RequestPayload = Mapping[str, Any]  # AdmissionReview.request
ResponsePayload = dict[str, Any]  # AdmissionReview.response, without uid
Answer = Callable[[RequestPayload], Awaitable[ResponsePayload]]

logger = logging.getLogger("kopf.objects")  # paybill.logs names the object of each line (k8s_ref)


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str


def allowed() -> ResponsePayload:
    return {"allowed": True}


def refused(message: str, code: int = 403) -> ResponsePayload:
    return {"allowed": False, "status": {"message": message, "code": code}}


def patched(operations: list[dict[str, Any]]) -> ResponsePayload:
    """Admitted with a JSON patch (none when there is nothing to change, as kopf answers)."""
    if not operations:
        return allowed()
    encoded = base64.b64encode(orjson.dumps(operations)).decode("ascii")
    return {"allowed": True, "patch": encoded, "patchType": "JSONPatch"}


def pointer(*keys: str) -> str:
    """A JSON pointer (RFC 6901) to the keys."""
    return "".join("/" + key.replace("~", "~0").replace("/", "~1") for key in keys)


def annotations_patch(annotations: object, wanted: Mapping[str, str]) -> list[dict[str, Any]]:
    """JSON patch operations that make the object's metadata.annotations carry `wanted` (others kept): the
    operations kopf derives from `patch.metadata.annotations.update(wanted)`, without copying and diffing the body."""
    if not isinstance(annotations, Mapping):
        return [{"op": "add" if annotations is None else "replace", "path": pointer("metadata", "annotations"),
                 "value": dict(wanted)}] if wanted else []  # fmt: skip
    operations = []
    for key, value in wanted.items():
        if key not in annotations:
            operations.append({"op": "add", "path": pointer("metadata", "annotations", key), "value": value})
        elif annotations[key] != value:
            operations.append({"op": "replace", "path": pointer("metadata", "annotations", key), "value": value})
    return operations


class BadReview(Exception):
    """The review itself is malformed (not the object under review): answered with an HTTP error, as kopf does."""

    def __init__(self, status: type[aiohttp.web.HTTPException], reason: str) -> None:
        super().__init__(reason)
        self.status = status


def request_of(review: object, resource: Resource) -> RequestPayload:
    """The review's request, checked the way kopf checks it before calling a handler."""
    request = review.get("request") if isinstance(review, dict) else None
    if not isinstance(request, dict):
        raise BadReview(aiohttp.web.HTTPBadRequest, "the admission review has no request")
    asked = request.get("resource") or {}
    if (asked.get("group"), asked.get("version"), asked.get("resource")) != (
        resource.group,
        resource.version,
        resource.plural,
    ):
        raise BadReview(aiohttp.web.HTTPNotFound, f"The specified resource has no handlers: {asked}")
    if request.get("userInfo") is None:
        raise BadReview(aiohttp.web.HTTPBadRequest, "User info is missing from the admission request.")
    if request.get("object") is None and request.get("oldObject") is None:
        raise BadReview(aiohttp.web.HTTPBadRequest, "Either old or new object is missing from the admission request.")
    return request


def object_ref(request: RequestPayload) -> dict[str, str]:
    """The object a review is about, for the log line (paybill.logs)."""
    body = request.get("object") or request.get("oldObject") or {}
    kind = (request.get("kind") or {}).get("kind", "")
    return {"kind": str(kind), "namespace": str(request.get("namespace") or ""), "name": str(request.get("name") or
            (body.get("metadata") or {}).get("name") or "")}  # fmt: skip


async def answer_review(answer: Answer, webhook: str, request: RequestPayload) -> ResponsePayload:
    """The answer's response; an answer that raises refuses (code 500), logged with its traceback."""
    try:
        response = await answer(request)
    except Exception as exc:  # fail closed: an error admits nothing
        logger.exception(f"Webhook {webhook!r} failed: {exc}", extra={"k8s_ref": object_ref(request)})
        return refused(str(exc) or repr(exc), code=500)
    if not response.get("allowed"):
        message = (response.get("status") or {}).get("message", "")
        logger.info(f"Webhook {webhook!r} refused: {message}", extra={"k8s_ref": object_ref(request)})
    return response


def caller_allowed(peercert: Mapping[str, Any] | None, names: tuple[str, ...]) -> bool:
    """Whether the caller's verified client certificate (ssl's getpeercert()) has one of the subject CNs `names`;
    without names, any caller the TLS handshake let in."""
    if not names:
        return True
    subject = (peercert or {}).get("subject") or ()
    common_names = {value for rdn in subject for key, value in rdn if key == "commonName"}
    return not common_names.isdisjoint(names)


class ReviewServer(kopf.WebhookServer):
    """kopf's webhook server; reviews for the webhook ids in `answers` are answered by them, the rest by kopf.
    With `client_names`, a caller whose client certificate has none of those CNs is refused (403) unread."""

    def __init__(
        self, *, resource: Resource, answers: Mapping[str, Answer], client_names: tuple[str, ...] = (), **options: Any
    ) -> None:
        super().__init__(**options)
        self.resource = resource
        self.answers = dict(answers)
        self.client_names = client_names

    async def _serve(self, fn: Any, request: aiohttp.web.Request) -> aiohttp.web.Response:  # type: ignore[override]
        peercert = request.transport.get_extra_info("peercert") if request.transport else None
        if not caller_allowed(peercert, self.client_names):
            raise aiohttp.web.HTTPForbidden(reason="the client certificate names no permitted caller")
        webhook = request.match_info.get("id") or ""
        answer = self.answers.get(webhook)
        if answer is None:
            return await kopf.WebhookServer._serve(fn, request)
        try:
            review = orjson.loads(await request.read())
            payload = request_of(review, self.resource)
        except orjson.JSONDecodeError as exc:
            raise aiohttp.web.HTTPBadRequest(reason=str(exc)) from None
        except BadReview as exc:
            raise exc.status(reason=str(exc)) from None
        response = await answer_review(answer, webhook, payload)
        body = {
            "apiVersion": review.get("apiVersion", "admission.k8s.io/v1"),
            "kind": review.get("kind", "AdmissionReview"),
            "response": {"uid": payload.get("uid", ""), **response},
        }
        return aiohttp.web.Response(body=orjson.dumps(body), content_type="application/json")
