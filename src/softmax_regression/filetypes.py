"""Telling a regular file from what only looks like one: opening a named pipe with no writer blocks
forever, and a device or socket never ends; ``os.stat`` tells them apart without opening them."""

from __future__ import annotations

import os
import stat
from pathlib import Path

KINDS = ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISCHR, "a character device"),
         (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory"))


def not_a_regular_file(path: str | Path) -> str | None:
    """What ``path`` is when it exists but is no regular file (``"a named pipe (FIFO)"``, ...); else None.
    Symbolic links are followed, as opening would."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    if stat.S_ISREG(mode):
        return None
    return next((name for test, name in KINDS if test(mode)), "not a regular file")
