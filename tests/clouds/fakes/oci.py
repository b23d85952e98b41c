"""Oracle Cloud's APIs as the oci SDK calls them, every request's signature verified against the test API key:
Identity (regionSubscriptions, availabilityDomains), Limits (resourceAvailability), Resource Search (structured
query by freeform tag, limit/page, opc-next-page), Compute (GET instance, POST instance ?action=); OCI's error
shape ({"code", "message"}) with opc-request-id."""

from __future__ import annotations

import base64
import re
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from .base import Answer, FakeCloud, Instance, Request, WrongRequest, expect, page, settle

TENANCY = "ocid1.tenancy.oc1..aaaaaaaapaybilltest"
USER = "ocid1.user.oc1..aaaaaaaapaybilloperator"
REGIONS = ("eu-frankfurt-1", "us-ashburn-1")
DOMAINS = ("Uocm:EU-FRANKFURT-1-AD-1", "Uocm:EU-FRANKFURT-1-AD-2")
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PRIVATE_KEY = _KEY.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()
FINGERPRINT = "20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34"
_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_PRIVATE_KEY = _OTHER.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
).decode()
_SIGNATURE = re.compile(r'(\w+)="([^"]*)"')
_ONE = re.compile(
    r"^query instance resources where \(freeformTags\.key = '([^']+)' && freeformTags\.value = '([^']*)'\)$"
)
_ANY = re.compile(r"^query instance resources where freeformTags\.key = '([^']+)'$")
_STATES = {"running": "RUNNING", "stopping": "STOPPING", "stopped": "STOPPED", "starting": "STARTING"}


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, {"code": code, "message": message}, {"opc-request-id": "fake/0000", **(headers or {})})


class FakeOci(FakeCloud):
    def __init__(self) -> None:
        super().__init__()
        self.cores = {domain: (100.0, 0.0) for domain in DOMAINS}  # AD -> (available, used)

    def route(self, request: Request) -> Answer:
        if not self._signed(request):
            return error(
                401,
                "NotAuthenticated",
                "The required information to complete authentication was not provided or was incorrect.",
            )
        parts = request.path.strip("/").split("/")
        match parts, request.method:
            case ["20160918", "tenancies", tenancy, "regionSubscriptions"], "GET":
                expect(tenancy == TENANCY, "another tenancy")
                return Answer(
                    200,
                    [
                        {
                            "regionKey": r[:3].upper(),
                            "regionName": r,
                            "status": "READY",
                            "isHomeRegion": r == REGIONS[0],
                        }
                        for r in REGIONS
                    ],
                )
            case ["20160918", "availabilityDomains"], "GET":
                expect(request.param("compartmentId") == TENANCY, "availabilityDomains without the tenancy")
                return Answer(
                    200,
                    [
                        {"name": d, "id": f"ocid1.availabilitydomain.oc1..{i}", "compartmentId": TENANCY}
                        for i, d in enumerate(DOMAINS)
                    ],
                )
            case ["20190729", "services", "compute", "limits", "standard-e4-core-count", "resourceAvailability"], "GET":
                expect(request.param("compartmentId") == TENANCY, "resourceAvailability without compartmentId")
                domain = request.param("availabilityDomain")
                expect(domain in self.cores, f"unknown availabilityDomain {domain!r}")
                available, used = self.cores[domain]
                return Answer(
                    200,
                    {
                        "used": int(used),
                        "available": int(available),
                        "fractionalUsage": used,
                        "fractionalAvailability": available,
                        "effectiveQuotaValue": available + used,
                    },
                )
            case ["20180409", "resources"], "POST":
                return self._search(request)
            case ["20160918", "instances", ident], "GET":
                return self._instance(ident)
            case ["20160918", "instances", ident], "POST":
                return self._action(ident, request.param("action"))
        raise WrongRequest(f"no route for {request.method} {request.path}")

    def _signed(self, request: Request) -> bool:
        """The SDK's HTTP signature: keyId names this user's key, and the signature verifies over the listed headers."""
        fields = dict(_SIGNATURE.findall(request.headers.get("authorization", "")))
        expect(fields.get("version") == "1" and fields.get("algorithm") == "rsa-sha256", "not an OCI signature")
        names = fields.get("headers", "").split()
        required = {"date", "(request-target)", "host"} | (
            {"x-content-sha256", "content-type", "content-length"} if request.method == "POST" else set()
        )
        expect(required <= set(names), f"signature covers {names}")
        if fields.get("keyId") != f"{TENANCY}/{USER}/{FINGERPRINT}":
            return False
        lines = [
            f"(request-target): {request.method.lower()} {request.target}"
            if name == "(request-target)"
            else f"{name}: {request.headers.get(name, '')}"
            for name in names
        ]
        try:
            _KEY.public_key().verify(
                base64.b64decode(fields["signature"]), "\n".join(lines).encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except Exception:
            return False
        return True

    def _matches(self, value: str, asked: str) -> bool:
        """A tag value the query asks for; `over_match`: any value starting with it (an index that over-matches)."""
        return value.startswith(asked) if self.over_match else value == asked

    def _search(self, request: Request) -> Answer:
        body = request.body or {}
        expect(body.get("type") == "Structured" and body.get("matchingContextType") == "NONE", f"search details {body}")
        query = body.get("query", "")
        one, any_ = _ONE.match(query), _ANY.match(query)
        expect(one is not None or any_ is not None, f"unexpected query {query!r}")
        key = (one or any_).group(1)  # type: ignore[union-attr]
        chosen = sorted(
            (
                i
                for i in self.instances.values()
                if key in i.tags and (one is None or self._matches(i.tags[key], one.group(2)))
            ),
            key=lambda i: i.id,
        )
        size = int(request.param("limit") or 100)
        expect(1 <= size <= 1000, "limit out of 1..1000")
        found, token = page(chosen, request.param("page") or None, size)
        headers = {"opc-request-id": "fake/search"} | ({"opc-next-page": token} if token else {})
        return Answer(200, {"items": [self._summary(i) for i in found]}, headers)

    def _summary(self, instance: Instance) -> dict[str, Any]:
        return {
            "resourceType": "Instance",
            "identifier": instance.id,
            "compartmentId": TENANCY,
            "displayName": instance.name,
            "availabilityDomain": DOMAINS[0],
            "lifecycleState": _STATES[instance.state],
            "freeformTags": instance.tags,
            "definedTags": {},
            "timeCreated": "2026-11-30T12:00:00.000Z",
        }

    def _instance(self, ident: str) -> Answer:
        instance = self.instances.get(ident)
        if instance is None:
            return error(404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.")
        settle(instance)
        return Answer(200, self._full(instance), {"etag": f"etag-{instance.state}"})

    def _full(self, instance: Instance) -> dict[str, Any]:
        return {
            "id": instance.id,
            "displayName": instance.name,
            "compartmentId": TENANCY,
            "availabilityDomain": DOMAINS[0],
            "region": REGIONS[0],
            "shape": "VM.Standard.E4.Flex",
            "lifecycleState": _STATES[instance.state],
            "freeformTags": instance.tags,
            "timeCreated": "2026-11-30T12:00:00.000Z",
        }

    def _action(self, ident: str, action: str) -> Answer:
        expect(action in ("SOFTSTOP", "START"), f"unexpected action {action!r}")
        instance = self.instances.get(ident)
        if instance is None:
            return error(404, "NotAuthorizedOrNotFound", "Authorization failed or requested resource not found.")
        instance.state, instance.polls = ("stopping" if action == "SOFTSTOP" else "starting"), 0
        return Answer(200, self._full(instance))
