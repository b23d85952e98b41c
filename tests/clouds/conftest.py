"""Fixtures of the cloud adapter tests: moto's server with authentication on (AWS), the loopback fakes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.terraform.aws_sim import ensure_venv

POLICY_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """moto's server checking signatures after its first three actions (the IAM user, its key and its policy made
    here): {"url", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} of a user allowed everything."""
    import boto3

    python = ensure_venv()
    port = _free_port()
    log: Path = tmp_path_factory.mktemp("moto") / "moto.log"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"}
    process = subprocess.Popen(
        [str(python), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
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
        process.wait(10)
