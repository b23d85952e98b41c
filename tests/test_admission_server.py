"""The operator's webhook server (handlers/admission_server.py): kopf's server answering our reviews directly.

Real aiohttp and real TLS on loopback; the wire format is kopf's (what the API server and kubectl already read), and
the stamp's JSON patch is the one kopf derives from `patch.metadata.annotations.update(...)`.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jsonpatch
import pytest
from kopf._cogs.structs.patches import Patch

from paybill.handlers.admission_server import (
    Resource,
    ResponsePayload,
    ReviewServer,
    allowed,
    annotations_patch,
    patched,
    refused,
)
from paybill.kube.tls import loopback_certificate

WORKFLOWS = Resource("paybill.dev", "v1alpha1", "agentworkflows")
STAMP = {"admission.paybill.dev/requester": "system:serviceaccount:ns:bot", "admission.paybill.dev/plan-hashes": "{}"}


def body(annotations: Any = "absent") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": "w", "namespace": "ns"}
    if annotations != "absent":
        metadata["annotations"] = annotations
    return {"apiVersion": "paybill.dev/v1alpha1", "kind": "AgentWorkflow", "metadata": metadata, "spec": {}}


@pytest.mark.parametrize(
    "annotations",
    [
        "absent",
        {},
        {"team": "billing"},
        {"admission.paybill.dev/requester": "someone-else", "team": "billing"},  # a forged stamp is overwritten
        dict(STAMP),  # already carries it: nothing to change
        {"a~b/c": "x"},
    ],
    ids=["no-annotations", "empty", "others", "forged", "same", "escaped"],
)
def test_the_stamp_patch_is_the_one_kopf_derives(annotations: Any) -> None:
    wanted = {**STAMP, "admission.paybill.dev/odd~key/x": "v"}
    original = body(annotations)
    kopf_patch = Patch(body=original)  # type: ignore[arg-type]
    kopf_patch.metadata.annotations.update(wanted)
    theirs = kopf_patch.as_json_patch()
    ours = annotations_patch(original["metadata"].get("annotations"), wanted)
    assert sorted(map(json.dumps, ours)) == sorted(map(json.dumps, theirs))
    applied = jsonpatch.apply_patch(copy.deepcopy(original), ours)
    kept = {} if annotations == "absent" else annotations
    assert applied["metadata"]["annotations"] == {**kept, **wanted}


def test_null_annotations_are_replaced_by_the_stamp() -> None:
    """kopf cannot patch `annotations: null` (a TypeError, so a refusal); the stamp replaces it."""
    ours = annotations_patch(None, STAMP)
    assert jsonpatch.apply_patch(body(None), ours)["metadata"]["annotations"] == STAMP
    assert annotations_patch({}, {}) == [] and annotations_patch(None, {}) == []


def review(**request: Any) -> dict[str, Any]:
    payload = {
        "uid": "u-1",
        "kind": {"group": "paybill.dev", "version": "v1alpha1", "kind": "AgentWorkflow"},
        "resource": {"group": "paybill.dev", "version": "v1alpha1", "resource": "agentworkflows"},
        "name": "w",
        "namespace": "ns",
        "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:ns:bot"},
        "object": body(),
        "oldObject": None,
        **request,
    }
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": payload}


async def answer_stamp(request: Any) -> ResponsePayload:
    return patched(annotations_patch(request["object"]["metadata"].get("annotations"), STAMP))


async def answer_refuse(request: Any) -> ResponsePayload:
    return refused("step wipe: no_allow_rule")


async def answer_crash(request: Any) -> ResponsePayload:
    raise RuntimeError("the indexes are gone")


async def answer_allow(request: Any) -> ResponsePayload:
    return allowed()


ANSWERS = {"stamp": answer_stamp, "refuse": answer_refuse, "crash": answer_crash, "allow": answer_allow}


class Served:
    def __init__(self, url: str, trust: ssl.SSLContext | None, ca_bundle: str | None, kopf_asked: list[Any]) -> None:
        self.url, self.trust, self.ca_bundle, self.kopf_asked = url, trust, ca_bundle, kopf_asked

    async def post(self, webhook: str, payload: bytes | dict[str, Any]) -> tuple[int, Any]:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        connector = aiohttp.TCPConnector(ssl=self.trust) if self.trust else aiohttp.TCPConnector()
        async with (
            aiohttp.ClientSession(connector=connector) as session,
            session.post(f"{self.url}/{webhook}", data=data) as response,
        ):
            text = await response.text()
            return response.status, (json.loads(text) if response.status == 200 else text)


async def serve(tls_dir: Path | None) -> AsyncIterator[Served]:
    kopf_asked: list[Any] = []

    async def kopf_fn(request: Any, *, webhook: str | None = None, **_: Any) -> Any:
        kopf_asked.append((request, webhook))
        return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": {"allowed": True}}

    options: dict[str, Any] = {"addr": "127.0.0.1", "path": "/admission", "host": "127.0.0.1"}
    trust = None
    if tls_dir is None:
        options["insecure"] = True
    else:
        serving = loopback_certificate()
        tls_dir.mkdir(parents=True, exist_ok=True)
        (tls_dir / "tls.crt").write_bytes(serving.certificate)
        (tls_dir / "tls.key").write_bytes(serving.key)
        (tls_dir / "ca.crt").write_bytes(serving.certificate_authority)
        options.update(
            context=serving.server_context(),
            cafile=tls_dir / "ca.crt",
            certfile=tls_dir / "tls.crt",
            pkeyfile=tls_dir / "tls.key",
        )
        trust = ssl.create_default_context(cadata=serving.certificate_authority.decode())
    server = ReviewServer(resource=WORKFLOWS, answers=ANSWERS, **options)
    configs = server(kopf_fn)
    config = await anext(configs)
    try:
        yield Served(str(config.get("url")).rstrip("/"), trust, config.get("caBundle"), kopf_asked)
    finally:
        await configs.aclose()  # type: ignore[attr-defined]  # an async generator: stops the server


def run(tls_dir: Path | None, check: Any) -> None:
    async def main() -> None:
        async for served in serve(tls_dir):
            await check(served)

    asyncio.run(main())


@pytest.mark.parametrize("tls", [False, True], ids=["loopback-http", "https"])
def test_a_review_is_answered_in_kopfs_wire_format(tls: bool, tmp_path: Path) -> None:
    async def check(served: Served) -> None:
        if tls:
            assert served.url.startswith("https://127.0.0.1:")
            ca = (tmp_path / "tls" / "ca.crt").read_bytes()
            assert served.ca_bundle == base64.b64encode(ca).decode()
        status, answer = await served.post("stamp", review())
        assert status == 200
        assert answer["apiVersion"] == "admission.k8s.io/v1" and answer["kind"] == "AdmissionReview"
        response = answer["response"]
        assert response["uid"] == "u-1" and response["allowed"] is True and response["patchType"] == "JSONPatch"
        operations = json.loads(base64.b64decode(response["patch"]))
        assert jsonpatch.apply_patch(body(), operations)["metadata"]["annotations"] == STAMP
        status, answer = await served.post("allow", review(uid="u-2"))
        assert answer["response"] == {"uid": "u-2", "allowed": True}
        assert served.kopf_asked == []

    run(tmp_path / "tls" if tls else None, check)


def test_a_refusal_carries_its_message_and_code_and_is_logged_as_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def check(served: Served) -> None:
        _, answer = await served.post("refuse", review())
        assert answer["response"] == {
            "uid": "u-1",
            "allowed": False,
            "status": {"message": "step wipe: no_allow_rule", "code": 403},
        }

    caplog.set_level("INFO")
    run(None, check)
    lines = [r for r in caplog.records if "step wipe: no_allow_rule" in r.getMessage()]
    assert [r.levelname for r in lines] == ["INFO"]
    assert lines[0].k8s_ref == {"kind": "AgentWorkflow", "namespace": "ns", "name": "w"}  # type: ignore[attr-defined]


def test_an_answer_that_fails_admits_nothing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async def check(served: Served) -> None:
        _, answer = await served.post("crash", review())
        assert answer["response"]["allowed"] is False
        assert answer["response"]["status"] == {"message": "the indexes are gone", "code": 500}

    run(None, check)
    assert any(r.levelname == "ERROR" and r.exc_info for r in caplog.records)


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"{not json", 400),
        (b"[]", 400),
        (json.dumps(review(userInfo=None)).encode(), 400),
        (json.dumps(review(object=None)).encode(), 400),
        (json.dumps(review(resource={"group": "", "version": "v1", "resource": "secrets"})).encode(), 404),
    ],
    ids=["not-json", "no-request", "no-user-info", "no-object", "another-resource"],
)
def test_a_malformed_review_is_an_http_error_as_kopf_answers_it(payload: bytes, status: int, tmp_path: Path) -> None:
    async def check(served: Served) -> None:
        got, _ = await served.post("allow", payload)
        assert got == status
        assert served.kopf_asked == []

    run(None, check)


def test_another_webhook_id_is_answered_by_kopf(tmp_path: Path) -> None:
    async def check(served: Served) -> None:
        status, answer = await served.post("someone-elses", review())
        assert status == 200 and answer["response"] == {"allowed": True}
        assert [(request["request"]["uid"], webhook) for request, webhook in served.kopf_asked] == [
            ("u-1", "someone-elses")
        ]

    run(None, check)
