"""A pass-through to moto's server that answers AWS's throttling and 5xx errors first when told to (moto itself
never throttles): the Query API's XML error body, its status and Retry-After."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

from .base import Answer, FakeCloud, Request

_ERROR = (
    "<?xml version='1.0' encoding='UTF-8'?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message>"
    "</Error></Errors><RequestID>5f1d7a2c-0000-4000-8000-000000000000</RequestID></Response>"
)


def error(status: int, code: str, message: str, retry_after: str | None = None) -> Answer:
    headers = {"content-type": "text/xml"} | ({"retry-after": retry_after} if retry_after else {})
    return Answer(status, _ERROR.format(code=code, message=message).encode(), headers)


class MotoProxy(FakeCloud):
    def __init__(self, moto_url: str) -> None:
        self.moto = urlsplit(moto_url)
        super().__init__()

    def route(self, request: Request) -> Answer:
        connection = http.client.HTTPConnection(self.moto.hostname or "127.0.0.1", self.moto.port, timeout=60)
        try:
            connection.request(request.method, request.target, body=request.raw, headers=request.headers)
            response = connection.getresponse()
            body = response.read()
            kept = {k: v for k, v in response.getheaders() if k.lower() not in ("content-length", "transfer-encoding")}
            return Answer(response.status, body, kept)
        finally:
            connection.close()
