"""IDX parsing: round trips and every way a file can be rejected (naming the file), on files written here.

The real Fashion-MNIST files: ``tests/integration/test_real_data_sources.py``.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

from samples import encode_idx
from softmax_regression.data.idx import (
    MAGIC_IMAGES,
    MAGIC_LABELS,
    IdxError,
    decompress_if_gzip,
    parse_idx,
    read_images,
    read_labels,
    read_maybe_gzip,
)

rng = np.random.default_rng(0)
IMAGES = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
LABELS = np.array([0, 9, 3, 3, 7], dtype=np.uint8)


def write(path, data: bytes, gz: bool = False):
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def rejected(call, path, *fragments: str) -> str:
    """The IdxError message of ``call()``: one line, naming ``path`` and holding every fragment."""
    with pytest.raises(IdxError) as info:
        call()
    message = str(info.value)
    assert str(path) in message, message
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# ---- good files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_images_round_trip(tmp_path, gz):
    path = write(tmp_path / "images-idx3-ubyte", encode_idx(IMAGES), gz)
    got = read_images(path, count=5)
    assert got.dtype == np.uint8 and got.shape == (5, 28, 28)
    np.testing.assert_array_equal(got, IMAGES)
    np.testing.assert_array_equal(read_images(str(path)), IMAGES)  # str path and count=None


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_labels_round_trip(tmp_path, gz):
    path = write(tmp_path / "labels-idx1-ubyte.gz", encode_idx(LABELS), gz)
    got = read_labels(path, count=5)
    assert got.dtype == np.uint8 and got.shape == (5,)
    np.testing.assert_array_equal(got, LABELS)


def test_gzip_is_told_by_content_not_by_name(tmp_path):
    # a plain file named .gz and a gzip file without .gz both read correctly
    plain_named_gz = write(tmp_path / "a.gz", encode_idx(LABELS))
    gzip_named_plain = write(tmp_path / "b", encode_idx(LABELS), gz=True)
    assert gzip_named_plain.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_labels(plain_named_gz), LABELS)
    np.testing.assert_array_equal(read_labels(gzip_named_plain), LABELS)
    assert read_maybe_gzip(gzip_named_plain) == encode_idx(LABELS)


def test_encode_idx_header_layout():
    data = encode_idx(IMAGES)
    assert struct.unpack(">IIII", data[:16]) == (MAGIC_IMAGES, 5, 28, 28)
    assert len(data) == 16 + IMAGES.size
    assert struct.unpack(">II", encode_idx(LABELS)[:8]) == (MAGIC_LABELS, 5)
    np.testing.assert_array_equal(parse_idx(data), IMAGES)


def test_other_side_and_empty_files_are_accepted_when_asked_for(tmp_path):
    small = rng.integers(0, 256, size=(3, 8, 8), dtype=np.uint8)
    path = write(tmp_path / "small", encode_idx(small))
    np.testing.assert_array_equal(read_images(path, count=3, side=8), small)
    empty = write(tmp_path / "empty-labels", encode_idx(np.zeros(0, dtype=np.uint8)))
    assert read_labels(empty, count=0).shape == (0,)


# ---- rejections ---------------------------------------------------------------------------------


@pytest.mark.parametrize("magic", [0x00000D03, 0x00000804, 0x00000800, 0x12340803, 0x1F8C0803],
                         ids=["float-type", "4-dims", "0-dims", "nonzero-prefix", "almost-gzip"])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_bad_magic_number(tmp_path, magic, gz):
    data = struct.pack(">I", magic) + encode_idx(IMAGES)[4:]
    path = write(tmp_path / "bad-magic", data, gz)
    rejected(lambda: read_images(path), path, f"bad magic number 0x{magic:08x}", "0x00000803")
    rejected(lambda: read_labels(path), path, "bad magic number", "0x00000801")


def test_labels_file_passed_as_images(tmp_path):
    path = write(tmp_path / "train-labels-idx1-ubyte", encode_idx(LABELS))
    rejected(lambda: read_images(path), path, "expected an image file (3 dimensions)", "got 1")


def test_images_file_passed_as_labels(tmp_path):
    path = write(tmp_path / "train-images-idx3-ubyte", encode_idx(IMAGES), gz=True)
    rejected(lambda: read_labels(path), path, "expected a label file (1 dimension)", "got 3")


def test_two_dimensional_file_is_neither(tmp_path):
    path = write(tmp_path / "matrix", encode_idx(np.zeros((4, 28), dtype=np.uint8)))
    rejected(lambda: read_images(path), path, "got 2")
    rejected(lambda: read_labels(path), path, "got 2")


@pytest.mark.parametrize("size", [0, 1, 3])
def test_too_short_for_a_header(tmp_path, size):
    path = write(tmp_path / "stub", encode_idx(IMAGES)[:size])
    rejected(lambda: read_images(path), path, "too short for an IDX header", f"({size} bytes)")


@pytest.mark.parametrize("size", [4, 8, 15])
def test_truncated_header(tmp_path, size):
    path = write(tmp_path / "cut-header", encode_idx(IMAGES)[:size], gz=True)
    rejected(lambda: read_images(path), path, "truncated header", "need 16 bytes", f"got {size}")


def test_labels_truncated_header(tmp_path):
    path = write(tmp_path / "cut-labels", encode_idx(LABELS)[:6])
    rejected(lambda: read_labels(path), path, "truncated header", "need 8 bytes", "got 6")


@pytest.mark.parametrize("delta", [-1, -784, +1, +100])
@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
def test_data_length_differs_from_dimensions(tmp_path, delta, gz):
    data = encode_idx(IMAGES)
    data = data[:delta] if delta < 0 else data + b"\x00" * delta
    path = write(tmp_path / "images", data, gz)
    rejected(lambda: read_images(path), path, "dimensions 5x28x28 need 3920 data bytes",
             f"file has {3920 + delta}")


def test_labels_data_longer_than_dimensions(tmp_path):
    path = write(tmp_path / "labels", encode_idx(LABELS) + b"\x01")
    rejected(lambda: read_labels(path), path, "dimensions 5 need 5 data bytes, file has 6")


def test_huge_dimensions_do_not_overflow(tmp_path):
    # 2**22 * 2**22 * 2**20 == 2**64: wrapped to 0 in int64, it once matched an empty body
    header = struct.pack(">I", MAGIC_IMAGES) + struct.pack(">3I", 1 << 22, 1 << 22, 1 << 20)
    path = write(tmp_path / "huge", header)
    rejected(lambda: read_images(path), path, "need 18446744073709551616 data bytes, file has 0")


@pytest.mark.parametrize("shape,seen", [((2, 32, 32), "32x32"), ((2, 28, 27), "28x27"),
                                        ((2, 27, 28), "27x28")])
def test_wrong_image_side(tmp_path, shape, seen):
    path = write(tmp_path / "odd-side", encode_idx(np.zeros(shape, dtype=np.uint8)))
    rejected(lambda: read_images(path), path, f"images are {seen}, expected 28x28")


def test_wrong_side_when_resized_side_expected(tmp_path):
    path = write(tmp_path / "images", encode_idx(IMAGES))
    rejected(lambda: read_images(path, side=32), path, "images are 28x28, expected 32x32")


def test_wrong_image_count(tmp_path):
    path = write(tmp_path / "t10k-images-idx3-ubyte", encode_idx(IMAGES), gz=True)
    rejected(lambda: read_images(path, count=10_000), path, "holds 5 images, expected 10000")


def test_wrong_label_count(tmp_path):
    path = write(tmp_path / "t10k-labels-idx1-ubyte", encode_idx(LABELS))
    rejected(lambda: read_labels(path, count=4), path, "holds 5 labels, expected 4")


@pytest.mark.parametrize("bad", [10, 255])
def test_label_out_of_range(tmp_path, bad):
    labels = LABELS.copy()
    labels[2] = bad
    path = write(tmp_path / "labels", encode_idx(labels), gz=True)
    rejected(lambda: read_labels(path), path, f"label {bad} out of range, expected 0..9")


def test_label_range_follows_n_classes(tmp_path):
    path = write(tmp_path / "labels", encode_idx(LABELS))  # max label 9
    rejected(lambda: read_labels(path, n_classes=5), path, "label 9 out of range, expected 0..4")
    np.testing.assert_array_equal(read_labels(path, n_classes=10), LABELS)


def _corrupt_gzips() -> dict[str, bytes]:
    good = gzip.compress(encode_idx(IMAGES))
    flipped = bytearray(good)
    flipped[-6] ^= 0xFF  # inside the CRC-32 trailer
    body_flipped = bytearray(good)
    for i in range(20, 40):
        body_flipped[i] ^= 0x5A  # inside the deflate stream
    return {
        "truncated": good[: len(good) // 2],
        "no-trailer": good[:-8],
        "crc": bytes(flipped),
        "deflate": bytes(body_flipped),
        "magic-then-garbage": b"\x1f\x8b" + b"not gzip at all" * 10,
        "magic-only": b"\x1f\x8b",
    }


@pytest.mark.parametrize("kind", list(_corrupt_gzips()))
def test_corrupt_gzip(tmp_path, kind):
    path = write(tmp_path / "train-images-idx3-ubyte.gz", _corrupt_gzips()[kind])
    rejected(lambda: read_images(path), path, "corrupt gzip data")
    rejected(lambda: read_labels(path), path, "corrupt gzip data")
    with pytest.raises(IdxError, match="corrupt gzip data"):
        decompress_if_gzip(path.read_bytes(), str(path))


def test_idx_error_is_a_value_error():
    assert issubclass(IdxError, ValueError)
    with pytest.raises(IdxError, match=r"^<bytes>: too short"):
        parse_idx(b"")
    with pytest.raises(IdxError, match=r"^my-name: "):
        parse_idx(b"\x00\x00\x08\x01\x00\x00\x00\x02\x00", "my-name")


def test_resizing_the_read_only_arrays_of_idx_files_warns_of_nothing():
    """IDX arrays are read-only views of the file's bytes: torch warns (over several lines, in preprocess's
    log) of a tensor made on one without a copy."""
    import warnings

    from softmax_regression.data.splits import resize_images

    images = np.frombuffer(np.arange(3 * 28 * 28, dtype=np.uint32).astype(np.uint8).tobytes(), np.uint8)
    images = images.reshape(3, 28, 28)
    assert not images.flags.writeable
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resized = resize_images(images, 14)
    assert resized.shape == (3, 14, 14) and resized.dtype == np.uint8
