"""Small synthetic inputs the unit tests write: IDX files and model files, and the chapter's models to fill them."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from softmax_regression.data.idx import UBYTE


def encode_idx(array: np.ndarray) -> bytes:
    """IDX bytes for a uint8 array: the format of Fashion-MNIST's files."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">HBB", 0, UBYTE, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def save_model(path: str | Path, kind: str, W, b, side: int, params: dict, standardization=None) -> None:
    """Write a project model file (:func:`softmax_regression.models.file.model_bytes`) of a ``kind`` model with
    weights ``W`` (n_features x n_classes) and ``b``."""
    from softmax_regression.models.file import model_bytes

    Path(path).write_bytes(model_bytes(kind, W, b, side, params, standardization))


def chapter_model(kind: str, W, lr: float = 0.1, weight_decay: float = 0.0, loss: str = "cross_entropy"):
    """A chapter model of ``kind`` starting from weights ``W``, as the train stages build it
    (``pipeline/train_scratch.py``, ``pipeline/train_concise.py``): ``(net, step, weights)``, the net a callable
    from features to logits, ``step(X, y, lr)`` its training step on the loss ``loss``, and ``weights()`` its
    current ``(W, b)``, W n_features x n_classes."""
    from softmax_regression.models import concise, losses, scratch

    if kind == "scratch":
        return scratch.trainer(W, weight_decay, *losses.LOSSES[loss])
    if kind == "concise":
        return concise.trainer(W, lr, weight_decay, loss)
    raise ValueError(f"not a chapter model: {kind!r}")


def project_params(changes: dict | None = None) -> dict:
    """The project's params.yaml as YAML reads it (every section and key: the one place the defaults live),
    with ``changes`` (dotted keys, ``{"train.lr": 0.5}``) set on top: a key the file lacks is added."""
    import yaml

    from support import PROJECT_ROOT

    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    for dotted, value in (changes or {}).items():
        section, key = dotted.split(".", 1)
        raw[section][key] = value
    return raw


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


def assert_only_the_gzip_header_differs(release_dir: Path, regzipped_dir: Path, names) -> None:
    """The ``.gz`` files :func:`write_regzipped` wrote differ from the release's in their bytes, their
    header's mtime and file name, and not in what they decompress to."""
    import gzip

    for name in names:
        release = (release_dir / f"{name}.gz").read_bytes()
        ours = (regzipped_dir / f"{name}.gz").read_bytes()
        assert ours != release
        assert ours[4:8] != release[4:8]  # another mtime in the header
        assert f"not-{name}".encode() in ours[:64]  # another file name in the header
        assert gzip.decompress(ours) == gzip.decompress(release)
