"""The sources and the IDX reader on the real Fashion-MNIST: Debian's dataset-fashion-mnist (installed by .ci/run).

The unit tests (tests/unit/test_sources.py, test_idx.py) run the same code on a tiny synthetic release. Here are
the facts only the real files show: the official checksums are DESIGN.md's and the real files', Debian's
recompressed ``.gz`` files verify, and the size caps let the real files through, from a folder or a mirror.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from samples import assert_only_the_gzip_header_differs, write_regzipped
from softmax_regression.data.idx import read_images, read_labels
from softmax_regression.data.sources import (
    FASHION_MNIST,
    RAW_SHA256,
    RAW_SIZES,
    DataSourceError,
    fetch_fashion_mnist,
    raw_is_complete,
    read_directory,
    read_mirror,
    verified,
)

NAMES = list(RAW_SHA256)
"""train-images, train-labels, t10k-images, t10k-labels: the order every source reads them in."""

# The SHA-256 of the decompressed files, as DESIGN.md lists them.
DESIGN_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


pytestmark = pytest.mark.usefixtures("no_proxy_for_localhost")


@pytest.fixture(scope="module")
def real_raw(system_data_dir) -> dict[str, bytes]:
    """The four decompressed files of the real release."""
    return {n: gzip.decompress((system_data_dir / f"{n}.gz").read_bytes()) for n in NAMES}


@pytest.fixture(scope="module")
def regzipped_dir(tmp_path_factory, real_raw) -> Path:
    """The real content gzipped again with another mtime and file name in the header."""
    return write_regzipped(real_raw, tmp_path_factory.mktemp("regzipped"))


@pytest.fixture
def raw_dir(tmp_path) -> Path:
    return tmp_path / "project" / "data" / "raw"


def assert_verified_raw(raw_dir: Path, real_raw: dict[str, bytes]) -> None:
    """``raw_dir`` holds exactly the real decompressed files, renamed into place with no temporary beside it."""
    assert {p.name: p.read_bytes() for p in raw_dir.iterdir()} == real_raw
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == [raw_dir.name]


def fetch(raw_dir: Path, **kwargs):
    """``fetch_fashion_mnist`` of the official release (the default), offline and quiet unless told otherwise."""
    options = dict(system_dir=None, local_dir=None, mirrors=[], timeout=30, retries=0, progress=False)
    options.update(kwargs)
    return fetch_fashion_mnist(raw_dir, **options)


# ---- the official release -----------------------------------------------------------------------


def test_official_checksums_are_those_of_the_design_and_the_real_files(real_raw):
    assert RAW_SHA256 == DESIGN_SHA256
    assert dict(FASHION_MNIST.sha256) == DESIGN_SHA256
    for name, content in real_raw.items():
        assert hashlib.sha256(content).hexdigest() == RAW_SHA256[name]
        assert len(content) == RAW_SIZES[name] == FASHION_MNIST.sizes[name]
        assert verified(name, content, "here") is content


def test_checksum_is_of_decompressed_content_not_of_gzip_bytes(system_data_dir, regzipped_dir, real_raw, raw_dir):
    assert_only_the_gzip_header_differs(system_data_dir, regzipped_dir, NAMES)
    files = read_directory(regzipped_dir)
    assert {n: hashlib.sha256(c).hexdigest() for n, c in files.items()} == RAW_SHA256
    result = fetch(raw_dir, local_dir=str(regzipped_dir))
    assert result.source == f"data.local_dir {regzipped_dir}"
    assert_verified_raw(raw_dir, real_raw)


# ---- fetching the real files --------------------------------------------------------------------


def test_fetch_from_the_real_system_copy(system_data_dir, real_raw, raw_dir):
    result = fetch(raw_dir, system_dir=str(system_data_dir))
    assert result.source == f"system copy {system_data_dir}"
    assert result.skipped == [f"{raw_dir}: not fetched yet"]
    assert_verified_raw(raw_dir, real_raw)
    assert raw_is_complete(raw_dir)
    assert fetch(raw_dir, system_dir="/nonexistent").source == f"{raw_dir} (already fetched)"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_the_real_files_download_whole_from_a_mirror_of_debians_copy(system_data_dir, real_raw, raw_dir):
    """Each real ``.gz`` file is under its download cap and inflates within its size cap."""
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *args: QuietHandler(*args, directory=str(system_data_dir)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        assert read_mirror(url, timeout=30, retries=0, progress=False) == real_raw
        result = fetch(raw_dir, mirrors=[url])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
    assert result.source == f"mirror {url}"
    assert_verified_raw(raw_dir, real_raw)


def test_a_small_gzip_that_inflates_past_the_files_size_is_refused(tmp_path, raw_dir, system_data_dir):
    """A gzip bomb beside the three other real files: refused at the official file's size, not inflated whole."""
    local = tmp_path / "local"
    local.mkdir()
    for name in NAMES:
        shutil.copy(system_data_dir / f"{name}.gz", local)
    (local / "train-labels-idx1-ubyte.gz").unlink()
    with gzip.open(local / "train-labels-idx1-ubyte.gz", "wb", compresslevel=9) as f:
        for _ in range(64):
            f.write(b"\0" * (1 << 20))  # 64 MB of zeros in about 64 KB of gzip: under the file size cap
    assert (local / "train-labels-idx1-ubyte.gz").stat().st_size < 60008 + (1 << 16)
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, local_dir=str(local))
    assert "decompresses to more than the 60008 bytes allowed" in str(info.value)


# ---- the IDX reader -----------------------------------------------------------------------------


def test_real_fashion_mnist_files(system_data_dir):
    train_x = read_images(system_data_dir / "train-images-idx3-ubyte.gz", count=60_000)
    train_y = read_labels(system_data_dir / "train-labels-idx1-ubyte.gz", count=60_000)
    test_x = read_images(system_data_dir / "t10k-images-idx3-ubyte.gz", count=10_000)
    test_y = read_labels(system_data_dir / "t10k-labels-idx1-ubyte.gz", count=10_000)
    assert train_x.shape == (60_000, 28, 28) and test_x.shape == (10_000, 28, 28)
    assert np.bincount(train_y, minlength=10).tolist() == [6000] * 10
    assert np.bincount(test_y, minlength=10).tolist() == [1000] * 10
    assert train_x.min() == 0 and train_x.max() == 255
    # the first training image of Fashion-MNIST is an ankle boot (class 9)
    assert int(train_y[0]) == 9
