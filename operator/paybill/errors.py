"""Error text fit for status, Events and logs."""

from __future__ import annotations


def first_line(error: BaseException) -> str:
    """The first line of an error's message (drivers append context, and sometimes queries, below it)."""
    return (str(error).splitlines() or [type(error).__name__])[0]
