"""SHA-256, the one checksum of the project: of the data files, of a dataset, of a model file."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_digest(paths: list[Path]) -> str:
    """SHA-256 over the named files' names and bytes, in the order given: one checksum for a dataset."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(Path(path).name.encode() + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
