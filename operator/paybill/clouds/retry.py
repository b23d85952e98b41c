"""Bounded retries for cloud calls: 429 waits what Retry-After says, transient 5xx back off exponentially; anything
else, and the last failure, becomes a CloudError with the cloud's code and no credential in it.

Each SDK's own retry layer is turned off in the adapters, so that this one policy (and its count of calls) holds
for all five clouds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from .model import Cloud, CloudError

T = TypeVar("T")
TRANSIENT = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # calls in all, the first included
    base: float = 0.25  # first backoff of a 5xx, doubled each time
    cap: float = 20.0  # the longest single wait, Retry-After included
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int, retry_after: float | None) -> float:
        wanted = retry_after if retry_after is not None else self.base * 2**attempt
        return max(0.0, min(self.cap, wanted))


@dataclass(frozen=True)
class Failure:
    """An SDK exception read by the adapter: the HTTP status, the cloud's error code and message."""

    status: int | None
    code: str
    message: str
    retry_after: float | None = None

    @property
    def transient(self) -> bool:
        return self.status in TRANSIENT


def retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (an HTTP date is not used by these APIs: read as absent)."""
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def calling(
    cloud: Cloud,
    policy: RetryPolicy,
    read: Callable[[Exception], Failure | None],
    secrets: Iterable[str],
    call: Callable[[], T],
) -> T:
    """call(), retried while it fails transiently; a failure `read` does not know is re-raised as it is."""
    secrets = tuple(secrets)
    for attempt in range(policy.attempts):
        try:
            return call()
        except CloudError:
            raise
        except Exception as exc:
            failure = read(exc)
            if failure is None:
                raise
            if failure.transient and attempt + 1 < policy.attempts:
                policy.sleep(policy.delay(attempt, failure.retry_after))
                continue
            raise CloudError(cloud, failure.code, redact(failure.message, secrets)[:500], failure.status) from None
    raise AssertionError("unreachable: the last attempt returns or raises")
