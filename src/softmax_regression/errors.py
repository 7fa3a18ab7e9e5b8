"""Errors as the one line a command prints."""

from __future__ import annotations


def one_line(exc: BaseException) -> str:
    """An exception as one line: its first line, or its type where it has no message."""
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return first or type(exc).__name__
