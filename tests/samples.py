"""Small synthetic inputs the unit tests write: IDX files and model files."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from softmax_regression.idx import UBYTE


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array: the format of Fashion-MNIST's files."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def save_model(path: str | Path, model, side: int, params: dict, standardization=None) -> None:
    """Write a project model file (:func:`softmax_regression.models.model_bytes`) for ``model``."""
    from softmax_regression.models import model_bytes

    Path(path).write_bytes(model_bytes(model, side, params, standardization))


def write_regzipped(files: dict[str, bytes], directory: Path) -> Path:
    """``files`` gzipped into ``directory`` with another mtime, file name and level in the header than any
    release's: the content verifies, the gzip bytes differ."""
    import gzip
    import io

    for name, content in files.items():
        buf = io.BytesIO()
        with gzip.GzipFile(filename=f"not-{name}", mode="wb", fileobj=buf, mtime=1_234_567_890,
                           compresslevel=1) as gz:
            gz.write(content)
        (directory / f"{name}.gz").write_bytes(buf.getvalue())
    return directory
