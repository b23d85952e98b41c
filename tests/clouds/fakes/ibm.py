"""IBM Cloud as ibm-vpc and its SDK core call it: IAM's apikey token exchange (a JWT the SDK decodes), Global
Search (POST /v3/resources/search, Lucene-like query on tags, search_cursor), the VPC API under /v1 (regions,
instances, instance actions; version and generation=2 on every call); IAM's and the VPC API's error shapes."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from .base import Answer, FakeCloud, Instance, Request, WrongRequest, expect, page, settle

API_KEY = "ibm-fake-api-key-0123456789abcdef"
ACCOUNT = "a1b2c3d4e5f6"
REGIONS = ("us-south", "eu-de")
VERSION = "2026-10-06"
_SIGNING = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ONE = re.compile(r'^service_name:is AND type:instance AND region:([a-z-]+) AND tags:"([^":]+):([^"]*)"$')
_ANY = re.compile(r"^service_name:is AND type:instance AND region:([a-z-]+) AND tags:([^\\:]+)\\:\*$")


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    body = {
        "errors": [{"code": code, "message": message, "more_info": "https://cloud.ibm.com/docs/vpc"}],
        "trace": "fake",
    }
    return Answer(status, body, headers or {})


def crn(region: str, ident: str) -> str:
    return f"crn:v1:bluemix:public:is:{region}-1:a/{ACCOUNT}::instance:{ident}"


class FakeIbm(FakeCloud):
    def __init__(self) -> None:
        super().__init__()
        self.tokens: set[str] = set()

    def route(self, request: Request) -> Answer:
        if request.path == "/identity/token":
            return self._token(request)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.tokens:
            return error(401, "not_authorized", "The request is not authorized.")
        parts = request.path.strip("/").split("/")
        if parts[0] == "v1":
            expect(request.param("version") == VERSION and request.param("generation") == "2", "no version/generation")
        match parts, request.method:
            case ["v3", "resources", "search"], "POST":
                return self._search(request)
            case ["v1", "regions", name], "GET":
                if name not in REGIONS:
                    return error(404, "not_found", f"Region {name} not found")
                return Answer(
                    200, {"name": name, "status": "available", "endpoint": f"https://{name}.iaas.cloud.ibm.com"}
                )
            case ["v1", "instances", ident], "GET":
                instance = self.instances.get(ident)
                if instance is None:
                    return error(404, "not_found", f"Instance not found: {ident}")
                settle(instance)
                return Answer(200, self._render(instance))
            case ["v1", "instances", ident, "actions"], "POST":
                return self._action(ident, request.body or {})
        raise WrongRequest(f"no route for {request.method} {request.path}")

    def _token(self, request: Request) -> Answer:
        expect(request.method == "POST", "token by GET")
        expect(request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"), "not a form")
        form = {k: v[-1] for k, v in parse_qs(request.raw.decode()).items()}
        expect(
            form.get("grant_type") == "urn:ibm:params:oauth:grant-type:apikey", f"grant_type {form.get('grant_type')}"
        )
        if form.get("apikey") != API_KEY:
            return Answer(
                400,
                {
                    "errorCode": "BXNIM0415E",
                    "errorMessage": "Provided API key could not be found.",
                    "context": {"requestId": "fake"},
                },
            )
        now = int(time.time())
        token = jwt.encode(
            {"iam_id": "iam-ServiceId-paybill", "iat": now, "exp": now + 3600, "account": {"bss": ACCOUNT}},
            _SIGNING,
            algorithm="RS256",
        )
        self.tokens.add(token)
        return Answer(
            200,
            {
                "access_token": token,
                "refresh_token": "not_supported",
                "token_type": "Bearer",
                "expires_in": 3600,
                "expiration": now + 3600,
            },
        )

    def _matches(self, value: str, asked: str) -> bool:
        """A tag value the query asks for; `over_match`: any value starting with it (an index that over-matches)."""
        return value.startswith(asked) if self.over_match else value == asked

    def _search(self, request: Request) -> Answer:
        body = request.body or {}
        expect(set(body.get("fields", [])) >= {"crn", "tags"}, f"fields {body.get('fields')}")
        query = body.get("query", "")
        one, any_ = _ONE.match(query), _ANY.match(query)
        expect(one is not None or any_ is not None, f"unexpected query {query!r}")
        match = one or any_
        assert match is not None
        region, key = match.group(1), match.group(2)
        chosen = sorted(
            (
                i
                for i in self.instances.values()
                if i.region == region and key in i.tags and (one is None or self._matches(i.tags[key], one.group(3)))
            ),
            key=lambda i: i.id,
        )
        size = int(request.param("limit") or 10)
        expect(1 <= size <= 1000, "limit out of 1..1000")
        cursor = body.get("search_cursor")
        # Global Search always hands back a cursor; past the last item the next page is empty
        found, cursor = ([], None) if cursor == "end" else page(chosen, cursor, size)
        items = [
            {
                "crn": crn(i.region, i.id),
                "name": i.name,
                "region": i.region,
                "tags": [f"{k}:{v}" for k, v in i.tags.items()],
            }
            for i in found
        ]
        return Answer(200, {"items": items, "limit": size, "search_cursor": cursor or "end"})

    def _render(self, instance: Instance) -> dict[str, Any]:
        return {
            "id": instance.id,
            "crn": crn(instance.region, instance.id),
            "name": instance.name,
            "status": instance.state,
            "zone": {"name": f"{instance.region}-1"},
            "profile": {"name": "bx2-2x8"},
        }

    def _action(self, ident: str, body: dict[str, Any]) -> Answer:
        kind = body.get("type")
        expect(kind in ("stop", "start"), f"unexpected action {kind!r}")
        instance = self.instances.get(ident)
        if instance is None:
            return error(404, "not_found", f"Instance not found: {ident}")
        instance.state, instance.polls = ("stopping" if kind == "stop" else "starting"), 0
        return Answer(
            201, {"id": f"action-{ident}", "type": kind, "status": "pending", "created_at": "2026-11-30T12:00:00Z"}
        )
