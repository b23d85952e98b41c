"""A pass-through to moto's server that answers AWS's throttling and 5xx errors first when told to (moto itself
never throttles): the Query API's XML error body, its status and Retry-After."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from tests.terraform.aws_sim import ensure_venv

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


POLICY_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@contextmanager
def moto_with_authentication(log: Path) -> Iterator[dict[str, str]]:
    """moto's server (the tests' moto venv) checking signatures after its first three actions (the IAM user, its
    key and its policy made here): {"url", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} of a user allowed all."""
    import boto3

    python = ensure_venv()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    process = subprocess.Popen(
        [str(python), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"moto did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        url = f"http://127.0.0.1:{port}"
        iam = boto3.client(
            "iam", endpoint_url=url, region_name="us-east-1", aws_access_key_id="bootstrap", aws_secret_access_key="x"
        )
        iam.create_user(UserName="paybill-operator")
        key = iam.create_access_key(UserName="paybill-operator")["AccessKey"]
        iam.put_user_policy(UserName="paybill-operator", PolicyName="all", PolicyDocument=POLICY_ALL)
        yield {"url": url, "AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: moto's werkzeug may not end in time
            process.kill()
            process.wait()
