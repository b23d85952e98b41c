"""When to try a failed run again: exponential, capped, pure (the reconciler adds jitter if it wants)."""

from __future__ import annotations

import math


def backoff_delay(attempt: int, base: float = 5.0, factor: float = 2.0, cap: float = 600.0) -> float:
    """Seconds to wait before retry number `attempt` (1 = the first retry): base * factor**(attempt-1), capped."""
    if attempt < 1:
        raise ValueError("attempt counts from 1")
    if base <= 0 or factor < 1 or cap < base:
        raise ValueError("need base > 0, factor >= 1 and cap >= base")
    if factor > 1 and attempt - 1 >= math.log(cap / base, factor):  # also spares a float overflow
        return cap
    return float(base * factor ** (attempt - 1))


def backoff_schedule(attempts: int, base: float = 5.0, factor: float = 2.0, cap: float = 600.0) -> list[float]:
    return [backoff_delay(n, base, factor, cap) for n in range(1, attempts + 1)]
