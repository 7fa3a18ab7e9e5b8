"""The IDX file format of (Fashion-)MNIST: a magic number, the dimensions, then raw bytes.

Parsed by hand rather than through torchvision so that every malformed file
is rejected with a message that names the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from softmax_regression import CLASS_NAMES

UBYTE = 0x08
MAGIC_IMAGES = 0x00000803  # unsigned bytes, 3 dimensions
MAGIC_LABELS = 0x00000801  # unsigned bytes, 1 dimension


class IdxError(ValueError):
    """An IDX file is malformed or is not what it was expected to be."""


def decompress_if_gzip(data: bytes, origin: str, max_size: int | None = None) -> bytes:
    """``data`` decompressed when it is gzip (told by its magic bytes, not a file name).

    With ``max_size``, content beyond it is an error found without inflating
    it: a small gzip bomb cannot take the memory.
    """
    if data[:2] != b"\x1f\x8b":
        if max_size is not None and len(data) > max_size:
            raise IdxError(f"{origin}: {len(data)} bytes, over the {max_size} bytes allowed")
        return data
    if max_size is None:
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxError(f"{origin}: corrupt gzip data ({exc})") from None
    content = bytearray()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
            while chunk := stream.read(1 << 20):  # a MB at a time: memory stays at the cap, not twice it
                content += chunk
                if len(content) > max_size:
                    raise IdxError(f"{origin}: decompresses to more than the {max_size} bytes allowed")
    except (OSError, EOFError, zlib.error) as exc:
        raise IdxError(f"{origin}: corrupt gzip data ({exc})") from None
    return bytes(content)


def read_maybe_gzip(path: str | Path) -> bytes:
    """The bytes of ``path``, decompressed when it is gzip."""
    return decompress_if_gzip(Path(path).read_bytes(), str(path))


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """An array from IDX bytes; only unsigned-byte IDX files (as in Fashion-MNIST) are accepted."""
    if len(data) < 4:
        raise IdxError(f"{name}: too short for an IDX header ({len(data)} bytes)")
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != UBYTE or not 1 <= ndim <= 3:
        magic = struct.unpack(">I", data[:4])[0]
        raise IdxError(
            f"{name}: bad magic number 0x{magic:08x}; expected 0x{MAGIC_LABELS:08x} (labels) "
            f"or 0x{MAGIC_IMAGES:08x} (images)"
        )
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IdxError(f"{name}: truncated header, {ndim} dimensions need {header} bytes, got {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = math.prod(dims)  # exact: np.prod in int64 wraps for crafted huge dimensions
    got = len(data) - header
    if got != expected:
        raise IdxError(
            f"{name}: dimensions {'x'.join(map(str, dims))} need {expected} data bytes, file has {got}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_images(path: str | Path, count: int | None = None, side: int = 28) -> np.ndarray:
    """Images ``[N, side, side]`` uint8 from an IDX3 file (gzip or not)."""
    path = Path(path)
    array = parse_idx(read_maybe_gzip(path), str(path))
    if array.ndim != 3:
        raise IdxError(f"{path}: expected an image file (3 dimensions), got {array.ndim} dimension(s)")
    if array.shape[1:] != (side, side):
        raise IdxError(f"{path}: images are {array.shape[1]}x{array.shape[2]}, expected {side}x{side}")
    if count is not None and array.shape[0] != count:
        raise IdxError(f"{path}: holds {array.shape[0]} images, expected {count}")
    return array


def read_labels(path: str | Path, count: int | None = None, n_classes: int = len(CLASS_NAMES)) -> np.ndarray:
    """Labels ``[N]`` uint8 from an IDX1 file (gzip or not), each in ``[0, n_classes)``."""
    path = Path(path)
    array = parse_idx(read_maybe_gzip(path), str(path))
    if array.ndim != 1:
        raise IdxError(f"{path}: expected a label file (1 dimension), got {array.ndim} dimensions")
    if count is not None and array.shape[0] != count:
        raise IdxError(f"{path}: holds {array.shape[0]} labels, expected {count}")
    if array.size and int(array.max()) >= n_classes:
        raise IdxError(f"{path}: label {int(array.max())} out of range, expected 0..{n_classes - 1}")
    return array
