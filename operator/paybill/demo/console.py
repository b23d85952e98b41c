"""What the demo tells its user: timestamped lines, and the error that ends it with one FAILED line."""

from __future__ import annotations

import time


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class DemoError(Exception):
    """A step cannot go on; its message is the FAILED line (no traceback)."""
