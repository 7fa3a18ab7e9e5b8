"""Sources of Fashion-MNIST: checksums, the order sources are tried in, and real downloads.

Every case runs on a tiny synthetic release (a few dozen random images, written as real IDX
files, pinned by its own :class:`Release`), so no real data is needed and every file is small.
Downloads go to a real HTTP server on 127.0.0.1 serving its ``.gz`` files; misbehaviour
(truncation, 404, 500, stalls) is done by that server. The same code on the real files (the
official checksums, Debian's ``.gz`` files): ``tests/integration/test_real_data_sources.py``.
"""

from __future__ import annotations

import dataclasses
import errno
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from samples import assert_only_the_gzip_header_differs, encode_idx, write_regzipped
from softmax_regression.data.sources import (
    FASHION_MNIST,
    GZIP_SLACK,
    RAW_SHA256,
    RAW_SIZES,
    DataSourceError,
    Release,
    SourceFailed,
    download,
    fetch_fashion_mnist,
    raw_is_complete,
    read_directory,
    read_mirror,
    verified,
)

NAMES = list(FASHION_MNIST.names)
"""train-images, train-labels, t10k-images, t10k-labels: the order every source reads them in."""

SYNTHETIC_COUNTS = {"train": 48, "t10k": 24}
"""Images (and labels) per split of the synthetic release: every file a few KB at most."""

HOW_TO = ("apt-get install -y dataset-fashion-mnist", "data.local_dir")


pytestmark = pytest.mark.usefixtures("no_proxy_for_localhost")


# ---- data helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def raw_files() -> dict[str, bytes]:
    """The four decompressed files of the synthetic release: IDX files laid out as the official ones,
    with sparse random images (so gzip has something to compress) and labels 0-9."""
    rng = np.random.default_rng(20240601)
    files = {}
    for split, count in SYNTHETIC_COUNTS.items():
        pixels = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        images = np.where(rng.random((count, 28, 28)) < 0.5, pixels, 0).astype(np.uint8)
        files[f"{split}-images-idx3-ubyte"] = encode_idx(images)
        files[f"{split}-labels-idx1-ubyte"] = encode_idx(rng.integers(0, 10, size=count, dtype=np.uint8))
    return {name: files[name] for name in NAMES}


@pytest.fixture(scope="session")
def release(raw_files) -> Release:
    """The synthetic release pinned as the official one is: the SHA-256 and size of each decompressed file."""
    return Release(sha256={n: hashlib.sha256(c).hexdigest() for n, c in raw_files.items()},
                   sizes={n: len(c) for n, c in raw_files.items()})


@pytest.fixture(scope="session")
def system_copy(tmp_path_factory, raw_files) -> Path:
    """The synthetic release as Debian ships the real one: ``<name>.gz`` files, gzip headers with a fixed
    mtime and no file name. Shared by the session: tests that damage it damage a copy."""
    directory = tmp_path_factory.mktemp("system-copy")
    for name, content in raw_files.items():
        (directory / f"{name}.gz").write_bytes(gzip.compress(content, compresslevel=9, mtime=1_591_347_949))
    return directory


@pytest.fixture(scope="session")
def regzipped_dir(tmp_path_factory, raw_files) -> Path:
    """The same content gzipped again with another mtime and file name in the header."""
    return write_regzipped(raw_files, tmp_path_factory.mktemp("regzipped"))


def copy_system_dir(system_copy: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for name in NAMES:
        shutil.copy(system_copy / f"{name}.gz", dest)
    return dest


def flip_bytes(data: bytes, at: int, n: int = 16) -> bytes:
    out = bytearray(data)
    for i in range(at, at + n):
        out[i] ^= 0xFF
    return bytes(out)


def flip_deflate_stream(gz: bytes) -> bytes:
    """``gz`` (no file name in its header) with every byte between the 10-byte header and the 8-byte trailer
    flipped: the gzip magic stays, the compressed data is garbage."""
    return flip_bytes(gz, 10, len(gz) - 18)


def snapshot(directory: Path) -> dict[str, tuple[int, int, str]]:
    """Every entry under ``directory``: inode, mtime and content hash, so a rewrite shows."""
    if not directory.exists():
        return {}
    result = {}
    for path in sorted(directory.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        result[str(path.relative_to(directory))] = (st.st_ino, st.st_mtime_ns, digest)
    return result


def assert_nothing_written(raw_dir: Path) -> None:
    """No raw dir and no temporary file or directory next to where it would be."""
    assert not raw_dir.exists()
    parent = raw_dir.parent
    assert not parent.exists() or sorted(p.name for p in parent.iterdir()) == []


def assert_verified_raw(raw_dir: Path, release: Release) -> None:
    assert sorted(p.name for p in raw_dir.iterdir()) == sorted(NAMES)
    for name in NAMES:
        assert hashlib.sha256((raw_dir / name).read_bytes()).hexdigest() == release.sha256[name]
    # renamed into place: no temporary directories left beside it
    assert sorted(p.name for p in raw_dir.parent.iterdir()) == [raw_dir.name]


def download_cap(release: Release, name: str) -> int:
    """The most bytes a download of ``<name>.gz`` may bring: the file's size plus gzip's slack."""
    return release.sizes[name] + GZIP_SLACK


@pytest.fixture
def raw_dir(tmp_path) -> Path:
    return tmp_path / "project" / "data" / "raw"


@pytest.fixture
def fetch(release):
    """``fetch_fashion_mnist`` of the synthetic release, with no source, a 5 s timeout, no retry and no
    progress bar unless a test says otherwise."""
    def fetch_synthetic(raw_dir: Path, **kwargs):
        options = dict(system_dir=None, local_dir=None, mirrors=[], timeout=5, retries=0, progress=False,
                       release=release)
        options.update(kwargs)
        return fetch_fashion_mnist(raw_dir, **options)

    return fetch_synthetic


# ---- a real HTTP mirror on 127.0.0.1 --------------------------------------------------------------


class QuietServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients that time out break the pipe
        pass


class Mirror:
    """A ThreadingHTTPServer serving ``root`` on a free port, with per-path misbehaviour.

    ``behaviour`` maps a request path (``/fashion/train-labels-idx1-ubyte.gz``) to one of
    ``short_content_length``, ``chunked_truncated``, ``stall``, ``stall_mid_body``, ``trickle``,
    ``trickle_headers``, ``endless``, ``huge_length``, ``redirect_loop``, ``404``, ``500``. A misbehaviour that cuts a body
    cuts it in half, so it stays a cut whatever the file's size.
    """

    STALL_LIMIT = 30.0  # handlers blocked on ``release`` are freed at teardown long before this

    def __init__(self, root: Path):
        self.root = root
        self.requests: list[str] = []
        self.behaviour: dict[str, str] = {}
        self.release = threading.Event()
        mirror = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                pass

            def do_GET(self):
                mirror.requests.append(self.path)
                mode = mirror.behaviour.get(self.path)
                if mode is None:
                    return super().do_GET()
                try:
                    getattr(mirror, "_" + mode)(self)
                except OSError:  # the client gave up first
                    pass

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()

    def url(self, directory: str = "fashion") -> str:
        return f"http://127.0.0.1:{self.port}/{directory}"

    def count(self, name: str, directory: str = "fashion") -> int:
        return self.requests.count(f"/{directory}/{name}.gz")

    def body(self, handler) -> bytes:
        return (self.root / handler.path.lstrip("/")).read_bytes()

    # misbehaviours
    def _short_content_length(self, h):
        body = self.body(h)
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[: len(body) // 2])
        h.wfile.flush()
        h.close_connection = True

    def _chunked_truncated(self, h):
        body = self.body(h)
        h.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        h.wfile.write(b"%x\r\n" % len(body) + body[: len(body) // 2])  # announces the body, sends half, closes
        h.wfile.flush()
        h.close_connection = True

    def _stall(self, h):
        self.release.wait(self.STALL_LIMIT)
        body = self.body(h)
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _stall_mid_body(self, h):
        body = self.body(h)
        half = len(body) // 2
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body[:half])
        h.wfile.flush()
        self.release.wait(self.STALL_LIMIT)
        h.wfile.write(body[half:])

    def _trickle(self, h):
        """The right length announced, then one byte every 0.2 s: never a stall long enough to time out."""
        body = self.body(h)
        h.send_response(200)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        for i in range(len(body)):
            if self.release.wait(0.2):
                return
            h.wfile.write(body[i:i + 1])
            h.wfile.flush()

    TRICKLED_HEADER = b"HTTP/1.1 200 OK\r\nX-Padding: " + b"." * 300 + b"\r\nContent-Length: 0\r\n\r\n"

    def _trickle_headers(self, h):
        """The status line and headers one byte every 0.2 s (a minute in all): inside ``urlopen``, before any
        body a download loop could time; ``headers_sent`` counts the bytes that went out."""
        self.headers_sent = 0
        for i in range(len(self.TRICKLED_HEADER)):
            if self.release.wait(0.2):
                return
            h.wfile.write(self.TRICKLED_HEADER[i:i + 1])
            h.wfile.flush()
            self.headers_sent += 1
        h.close_connection = True

    def _endless(self, h):
        """A chunked body that never ends (until the client hangs up)."""
        h.wfile.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"\0" * (1 << 16)
        while not self.release.is_set():
            h.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
        h.close_connection = True

    def _huge_length(self, h):
        h.send_response(200)
        h.send_header("Content-Length", str(10 ** 12))
        h.end_headers()
        h.wfile.write(b"\0" * 1000)
        h.close_connection = True

    def _redirect_loop(self, h):
        h.send_response(302)
        h.send_header("Location", h.path)
        h.send_header("Content-Length", "0")
        h.end_headers()

    def _404(self, h):
        h.send_error(404)

    def _500(self, h):
        h.send_error(500)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)
        assert not self.thread.is_alive()


@pytest.fixture
def mirror(tmp_path, system_copy):
    """The synthetic release's .gz files served at /fashion/ (and the same directory again at /alt/)."""
    root = tmp_path / "served"
    (root / "fashion").mkdir(parents=True)
    for name in NAMES:
        os.link(system_copy / f"{name}.gz", root / "fashion" / f"{name}.gz")
    (root / "alt").symlink_to(root / "fashion")
    server = Mirror(root)
    yield server
    server.close()


def serve_instead(mirror: Mirror, name: str, data: bytes) -> None:
    """Serve ``data`` as ``/fashion/<name>.gz`` (a new file: the hard-linked copy stays intact)."""
    path = mirror.root / "fashion" / f"{name}.gz"
    path.unlink()
    path.write_bytes(data)


# ---- releases and checksums ---------------------------------------------------------------------


def test_the_official_release_is_the_default_and_is_read_only(system_copy):
    assert FASHION_MNIST.names == ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                   "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert dict(FASHION_MNIST.sha256) == RAW_SHA256 and dict(FASHION_MNIST.sizes) == RAW_SIZES
    with pytest.raises(dataclasses.FrozenInstanceError):
        FASHION_MNIST.sha256 = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        FASHION_MNIST.sha256["train-images-idx3-ubyte"] = "0" * 64  # type: ignore[index]
    # without a release, the functions verify against the official one: other files are refused
    with pytest.raises(SourceFailed, match=r"train-images-idx3-ubyte has SHA-256 \w+\.\.\., expected c59f468a2f67"):
        read_directory(system_copy)


def test_a_release_pins_the_same_files_by_checksum_and_by_size():
    checksums, sizes = {"a": "0" * 64, "b": "1" * 64}, {"a": 1, "b": 2}
    release = Release(sha256=checksums, sizes=sizes)
    checksums["a"], sizes["a"] = "f" * 64, 10 ** 9  # the caller's dicts change afterwards
    assert release.names == ("a", "b")
    assert dict(release.sha256) == {"a": "0" * 64, "b": "1" * 64} and dict(release.sizes) == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="the same files by SHA-256 and by size"):
        Release(sha256={"a": "0" * 64}, sizes={"b": 1})
    with pytest.raises(ValueError, match="the same files by SHA-256 and by size"):
        Release(sha256={"a": "0" * 64, "b": "1" * 64}, sizes={"b": 2, "a": 1})  # the order sources read in


def test_a_release_verifies_its_own_files(raw_files, release):
    for name, content in raw_files.items():
        assert hashlib.sha256(content).hexdigest() == release.sha256[name]
        assert len(content) == release.sizes[name]
        assert verified(name, content, "here", release) is content


def test_changed_content_fails_verification(raw_files, release):
    name = "t10k-labels-idx1-ubyte"
    changed = flip_bytes(raw_files[name], len(raw_files[name]) // 2, 1)
    with pytest.raises(SourceFailed) as info:
        verified(name, changed, "some-origin", release)
    message = str(info.value)
    assert "some-origin" in message and name in message and "SHA-256" in message
    assert release.sha256[name][:12] in message
    # against the default, official release: the official checksum is named
    with pytest.raises(SourceFailed) as info:
        verified(name, changed, "some-origin")
    assert str(info.value) == (f"some-origin: {name} has SHA-256 {hashlib.sha256(changed).hexdigest()[:12]}..., "
                               f"expected 0402a96d92fd...")


def test_checksum_is_of_decompressed_content_not_of_gzip_bytes(system_copy, regzipped_dir, raw_dir, release, fetch):
    assert_only_the_gzip_header_differs(system_copy, regzipped_dir, NAMES)
    files = read_directory(regzipped_dir, release)
    assert {n: hashlib.sha256(c).hexdigest() for n, c in files.items()} == release.sha256
    result = fetch(raw_dir, local_dir=str(regzipped_dir))
    assert result.source == f"data.local_dir {regzipped_dir}"
    assert_verified_raw(raw_dir, release)


def test_plain_decompressed_files_are_accepted(tmp_path, raw_files, release, raw_dir, fetch):
    local = tmp_path / "plain"
    local.mkdir()
    for name, content in raw_files.items():
        (local / name).write_bytes(content)
    assert read_directory(local, release) == raw_files
    fetch(raw_dir, local_dir=str(local))
    assert_verified_raw(raw_dir, release)


def test_read_directory_failures_name_the_problem(tmp_path, system_copy, raw_files, release):
    with pytest.raises(SourceFailed, match="no such directory"):
        read_directory(tmp_path / "nowhere", release)
    partial = copy_system_dir(system_copy, tmp_path / "partial")
    (partial / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(SourceFailed, match=r"t10k-images-idx3-ubyte\[\.gz\] missing"):
        read_directory(partial, release)
    bad_gzip = copy_system_dir(system_copy, tmp_path / "bad-gzip")
    path = bad_gzip / "train-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(SourceFailed, match="corrupt gzip data") as info:
        read_directory(bad_gzip, release)
    assert str(path) in str(info.value)
    changed = copy_system_dir(system_copy, tmp_path / "changed")
    labels = raw_files["train-labels-idx1-ubyte"]
    (changed / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(flip_bytes(labels, len(labels) // 2, 1)))
    expected = release.sha256["train-labels-idx1-ubyte"][:12]
    with pytest.raises(SourceFailed, match=rf"train-labels-idx1-ubyte has SHA-256 \w+\.\.\., expected {expected}"):
        read_directory(changed, release)


# ---- source order -------------------------------------------------------------------------------


def test_verified_raw_dir_is_used_first_and_not_rewritten(system_copy, raw_dir, release, fetch, mirror):
    fetch(raw_dir, system_dir=str(system_copy))
    assert raw_is_complete(raw_dir, release)
    before = snapshot(raw_dir.parent)
    time.sleep(0.01)  # a rewrite would show in mtimes
    result = fetch(raw_dir, system_dir=str(system_copy), local_dir=str(system_copy), mirrors=[mirror.url()])
    assert result.source == f"{raw_dir} (already fetched)"
    assert snapshot(raw_dir.parent) == before
    assert mirror.requests == []
    # even with every other source gone
    result = fetch(raw_dir, system_dir="/nonexistent", local_dir=None, mirrors=[])
    assert result.source.endswith("(already fetched)")
    assert snapshot(raw_dir.parent) == before


def test_system_dir_beats_local_dir_and_mirrors(system_copy, regzipped_dir, raw_dir, release, fetch, mirror):
    result = fetch(raw_dir, system_dir=str(system_copy), local_dir=str(regzipped_dir), mirrors=[mirror.url()])
    assert result.source == f"system copy {system_copy}"
    assert result.skipped == [f"{raw_dir}: not fetched yet"]
    assert mirror.requests == []
    assert_verified_raw(raw_dir, release)


def test_local_dir_beats_mirrors(tmp_path, regzipped_dir, raw_dir, release, fetch, mirror):
    empty_system = tmp_path / "empty-system"
    empty_system.mkdir()
    result = fetch(raw_dir, system_dir=str(empty_system), local_dir=str(regzipped_dir), mirrors=[mirror.url()])
    assert result.source == f"data.local_dir {regzipped_dir}"
    assert any(str(empty_system) in s and "missing" in s for s in result.skipped)
    assert mirror.requests == []
    assert_verified_raw(raw_dir, release)


def test_an_unreadable_system_copy_falls_through_to_local_dir(tmp_path, system_copy, regzipped_dir, raw_dir, release,
                                                              fetch, mirror, monkeypatch):
    """A file the user may not read (as root here nothing is unreadable, so the refusal is the kernel's
    errno raised where read_bytes would meet it): that source fails in one line, the next is tried."""
    system = copy_system_dir(system_copy, tmp_path / "system")
    refused = system / "train-labels-idx1-ubyte.gz"
    read_bytes = Path.read_bytes

    def read_bytes_as_another_user(path):
        if path == refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes_as_another_user)
    result = fetch(raw_dir, system_dir=str(system), local_dir=str(regzipped_dir), mirrors=[mirror.url()])
    assert result.source == f"data.local_dir {regzipped_dir}"
    assert result.skipped[1] == f"{refused}: cannot be read (Permission denied)"
    assert mirror.requests == []
    assert_verified_raw(raw_dir, release)


@pytest.mark.parametrize("damage", ["flipped-gzip-bytes", "changed-content"])
def test_corrupt_system_copy_falls_through_to_local_dir(tmp_path, system_copy, regzipped_dir, raw_files, release,
                                                        raw_dir, fetch, mirror, damage):
    system = copy_system_dir(system_copy, tmp_path / "system")
    path = system / "t10k-images-idx3-ubyte.gz"
    if damage == "flipped-gzip-bytes":
        path.write_bytes(flip_bytes(path.read_bytes(), path.stat().st_size // 2))
    else:  # a valid gzip of content one byte off the release's
        images = raw_files["t10k-images-idx3-ubyte"]
        path.write_bytes(gzip.compress(flip_bytes(images, len(images) // 2, 1), compresslevel=1))
    result = fetch(raw_dir, system_dir=str(system), local_dir=str(regzipped_dir), mirrors=[mirror.url()])
    assert result.source == f"data.local_dir {regzipped_dir}"
    assert len(result.skipped) == 2 and str(system) in result.skipped[1]
    assert "t10k-images-idx3-ubyte" in result.skipped[1]
    assert mirror.requests == []
    assert_verified_raw(raw_dir, release)


def test_unverified_raw_dir_is_replaced_as_a_whole(system_copy, raw_files, release, raw_dir, fetch):
    raw_dir.mkdir(parents=True)
    for name, content in raw_files.items():
        (raw_dir / name).write_bytes(content)
    (raw_dir / "train-labels-idx1-ubyte").write_bytes(b"stale")
    (raw_dir / "leftover.tmp").write_bytes(b"x")
    result = fetch(raw_dir, system_dir=str(system_copy))
    assert result.source == f"system copy {system_copy}"
    assert_verified_raw(raw_dir, release)  # exactly the four files: the leftover went with the old dir


def test_later_mirror_used_when_an_earlier_one_fails(raw_dir, release, fetch, mirror):
    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "404"
    result = fetch(raw_dir, mirrors=[mirror.url("fashion"), mirror.url("alt") + "/"], retries=2)
    assert result.source == f"mirror {mirror.url('alt')}/"
    assert any("train-labels-idx1-ubyte.gz: HTTP 404" in s for s in result.skipped)
    assert mirror.count("train-labels-idx1-ubyte", "fashion") == 1
    assert all(mirror.count(n, "alt") == 1 for n in NAMES)
    assert_verified_raw(raw_dir, release)


# ---- downloads ----------------------------------------------------------------------------------


def test_download_of_good_files(raw_dir, release, fetch, mirror, capsys):
    result = fetch(raw_dir, system_dir=None, mirrors=[mirror.url()], progress=True)
    assert result.source == f"mirror {mirror.url()}"
    assert_verified_raw(raw_dir, release)
    assert sorted(mirror.requests) == sorted(f"/fashion/{n}.gz" for n in NAMES)
    assert mirror.requests[0] == "/fashion/train-images-idx3-ubyte.gz"


def test_read_mirror_returns_decompressed_verified_content(raw_files, release, mirror):
    assert read_mirror(mirror.url() + "/", timeout=5, retries=0, progress=False, release=release) == raw_files


def test_corrupted_download_fails(raw_dir, fetch, mirror, system_copy):
    name = "t10k-labels-idx1-ubyte"  # the last file: three good ones come first
    serve_instead(mirror, name, flip_deflate_stream((system_copy / f"{name}.gz").read_bytes()))
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, mirrors=[mirror.url()], retries=2)
    assert f"{mirror.url()}/t10k-labels-idx1-ubyte.gz" in str(info.value)
    assert mirror.count("t10k-labels-idx1-ubyte") == 1  # bad content is not a network error
    assert all(mirror.count(n) == 1 for n in NAMES)
    assert_nothing_written(raw_dir)


def test_download_with_wrong_content_fails_checksum(raw_dir, release, fetch, mirror, raw_files):
    name = "train-labels-idx1-ubyte"
    serve_instead(mirror, name, gzip.compress(flip_bytes(raw_files[name], len(raw_files[name]) // 2, 1)))
    expected = release.sha256[name][:12]
    with pytest.raises(DataSourceError, match=rf"{name} has SHA-256 \w+\.\.\., expected {expected}"):
        fetch(raw_dir, mirrors=[mirror.url()])
    assert_nothing_written(raw_dir)


def test_content_length_larger_than_body_fails_after_bounded_retries(raw_dir, fetch, mirror, system_copy):
    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "short_content_length"
    size = (system_copy / "train-labels-idx1-ubyte.gz").stat().st_size  # the server sends half of it
    with pytest.raises(DataSourceError,
                       match=rf"train-labels-idx1-ubyte\.gz: OSError: truncated: got {size // 2} of {size} bytes"):
        fetch(raw_dir, mirrors=[mirror.url()], retries=1)
    assert mirror.count("train-labels-idx1-ubyte") == 2  # one try + one retry
    assert mirror.count("t10k-images-idx3-ubyte") == 0  # the mirror is abandoned
    assert_nothing_written(raw_dir)


def test_file_cut_short_on_the_server_fails(raw_dir, fetch, mirror, system_copy):
    name = "train-images-idx3-ubyte"
    gz = (system_copy / f"{name}.gz").read_bytes()
    serve_instead(mirror, name, gz[: len(gz) // 2])
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte\.gz: corrupt gzip data"):
        fetch(raw_dir, mirrors=[mirror.url()], retries=2)
    assert mirror.requests == ["/fashion/train-images-idx3-ubyte.gz"]
    assert_nothing_written(raw_dir)


def test_truncated_chunked_download_fails_and_next_mirror_is_tried(raw_dir, release, fetch, mirror):
    mirror.behaviour["/fashion/train-images-idx3-ubyte.gz"] = "chunked_truncated"
    with pytest.raises(DataSourceError, match="IncompleteRead"):
        fetch(raw_dir, mirrors=[mirror.url()], retries=1)
    assert mirror.count("train-images-idx3-ubyte") == 2
    assert_nothing_written(raw_dir)
    result = fetch(raw_dir, mirrors=[mirror.url(), mirror.url("alt")], retries=0)
    assert result.source == f"mirror {mirror.url('alt')}"
    assert_verified_raw(raw_dir, release)


def test_404_is_not_retried(raw_dir, fetch, mirror):
    mirror.behaviour["/fashion/train-images-idx3-ubyte.gz"] = "404"
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte\.gz: HTTP 404"):
        fetch(raw_dir, mirrors=[mirror.url()], retries=3)
    assert mirror.requests == ["/fashion/train-images-idx3-ubyte.gz"]
    assert_nothing_written(raw_dir)


def test_missing_mirror_directory_is_a_404(raw_dir, fetch, mirror):
    with pytest.raises(DataSourceError, match="HTTP 404"):
        fetch(raw_dir, mirrors=[mirror.url("no-such-dir")], retries=2)
    assert mirror.requests == ["/no-such-dir/train-images-idx3-ubyte.gz"]
    assert_nothing_written(raw_dir)


def test_server_error_is_retried_a_bounded_number_of_times(raw_dir, fetch, mirror):
    mirror.behaviour["/fashion/train-images-idx3-ubyte.gz"] = "500"
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte\.gz: HTTP 500"):
        fetch(raw_dir, mirrors=[mirror.url()], retries=1)
    assert mirror.requests == ["/fashion/train-images-idx3-ubyte.gz"] * 2
    assert_nothing_written(raw_dir)


def test_stalled_server_times_out(raw_dir, fetch, mirror):
    mirror.behaviour["/fashion/train-images-idx3-ubyte.gz"] = "stall"
    start = time.monotonic()
    with pytest.raises(DataSourceError, match=r"train-images-idx3-ubyte\.gz: (TimeoutError|timeout)"):
        fetch(raw_dir, mirrors=[mirror.url()], timeout=1, retries=1)
    elapsed = time.monotonic() - start
    assert 2.0 <= elapsed < 8.0  # two 1 s timeouts and a 0.5 s back-off, not the 30 s stall
    assert mirror.requests == ["/fashion/train-images-idx3-ubyte.gz"] * 2
    assert_nothing_written(raw_dir)


def test_server_stalling_mid_body_times_out(raw_dir, fetch, mirror):
    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "stall_mid_body"
    start = time.monotonic()
    with pytest.raises(DataSourceError, match=r"train-labels-idx1-ubyte\.gz: (TimeoutError|timeout)"):
        fetch(raw_dir, mirrors=[mirror.url()], timeout=1, retries=0)
    assert time.monotonic() - start < 6.0
    assert mirror.count("train-labels-idx1-ubyte") == 1
    assert_nothing_written(raw_dir)


def test_refused_connection_fails(raw_dir, fetch):
    with socket.socket() as sock:  # a port that was free a moment ago and has no listener
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(DataSourceError, match="ConnectionRefusedError"):
        fetch(raw_dir, mirrors=[f"http://127.0.0.1:{port}/"], retries=0)
    assert_nothing_written(raw_dir)


def test_failed_fetch_leaves_an_existing_raw_dir_untouched(raw_files, raw_dir, fetch, mirror):
    raw_dir.mkdir(parents=True)
    for name in NAMES[:3]:  # not complete, so the mirror is tried
        (raw_dir / name).write_bytes(raw_files[name])
    before = snapshot(raw_dir.parent)
    mirror.behaviour["/fashion/t10k-labels-idx1-ubyte.gz"] = "short_content_length"
    with pytest.raises(DataSourceError):
        fetch(raw_dir, mirrors=[mirror.url()], retries=0)
    assert all(mirror.count(n) == 1 for n in NAMES)
    assert snapshot(raw_dir.parent) == before


def test_download_function_returns_the_body(mirror, system_copy):
    url = f"{mirror.url()}/t10k-labels-idx1-ubyte.gz"
    served = (system_copy / "t10k-labels-idx1-ubyte.gz").read_bytes()
    assert download(url, timeout=5, retries=0, progress=False) == served
    mirror.behaviour["/fashion/t10k-labels-idx1-ubyte.gz"] = "404"
    with pytest.raises(SourceFailed, match=r"t10k-labels-idx1-ubyte\.gz: HTTP 404$"):
        download(url, timeout=5, retries=0, progress=False)


@pytest.mark.parametrize("url, reason", [
    ("http://[abc/t10k-labels-idx1-ubyte.gz", "invalid URL (Invalid IPv6 URL)"),
    ("http:///t10k-labels-idx1-ubyte.gz", "no host given"),
])
def test_a_url_urllib_cannot_use_fails_that_source_naming_it_at_once(url, reason, monkeypatch):
    """Not retried, and a SourceFailed (the next source is tried), not an error that ends fetch."""
    from softmax_regression.data import sources

    pauses = []
    monkeypatch.setattr(sources.time, "sleep", pauses.append)  # the pause before each retry
    with pytest.raises(SourceFailed) as caught:
        download(url, timeout=5, retries=3, progress=False)
    assert str(caught.value) == f"{url}: {reason}"
    assert pauses == []


# ---- no source ----------------------------------------------------------------------------------


@pytest.mark.parametrize("system", ["empty", "none", "missing"])
def test_no_source_at_all_is_one_clear_line(tmp_path, raw_dir, fetch, system):
    system_dir = {"empty": tmp_path / "empty", "none": None, "missing": tmp_path / "missing"}[system]
    if system == "empty":
        system_dir.mkdir()
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, system_dir=system_dir and str(system_dir), local_dir=None, mirrors=[])
    message = str(info.value)
    assert "\n" not in message
    for how in HOW_TO:
        assert how in message
    if system_dir is not None:
        assert str(system_dir) in message
    assert_nothing_written(raw_dir)


def test_data_source_error_lists_every_source_tried(tmp_path, raw_dir, fetch, mirror):
    mirror.behaviour["/fashion/train-images-idx3-ubyte.gz"] = "404"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, system_dir=str(empty), local_dir=str(tmp_path / "nope"), mirrors=[mirror.url()])
    message = str(info.value)
    assert "\n" not in message
    assert str(empty) in message and str(tmp_path / "nope") in message and "HTTP 404" in message
    assert all(how in message for how in HOW_TO)
    assert message.index(str(empty)) < message.index(str(tmp_path / "nope")) < message.index("HTTP 404")
    assert_nothing_written(raw_dir)
    assert os.listdir(tmp_path / "empty") == []


# ---- bounded downloads: an overall deadline, a size cap ------------------------------------------

def test_a_trickling_mirror_ends_at_the_deadline(raw_dir, fetch, mirror, system_copy):
    """One byte every 0.2 s never trips the per-read timeout; the per-file deadline ends it."""
    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "trickle"
    assert (system_copy / "train-labels-idx1-ubyte.gz").stat().st_size * 0.2 > 2 * 3  # the whole body: > 2 deadlines
    started = time.monotonic()
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, mirrors=[mirror.url()], timeout=5, deadline=3)
    assert time.monotonic() - started < 15
    assert "train-labels-idx1-ubyte.gz: not done within the 3 s deadline (data.deadline)" in str(info.value)
    assert_nothing_written(raw_dir)


def test_a_mirror_trickling_its_headers_ends_at_the_deadline(raw_dir, fetch, mirror):
    """Headers a byte at a time arrive inside ``urlopen``, where the body's deadline checks never run: the
    deadline shuts the connection down, long before the server has sent them all."""
    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "trickle_headers"
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, mirrors=[mirror.url()], timeout=5, deadline=2)
    assert "train-labels-idx1-ubyte.gz: not done within the 2 s deadline (data.deadline)" in str(info.value)
    assert 0 < mirror.headers_sent < len(Mirror.TRICKLED_HEADER)
    assert_nothing_written(raw_dir)


def test_an_endless_body_is_cut_off_at_the_files_size_with_bounded_memory(raw_dir, release, fetch, mirror):
    import resource

    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "endless"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, mirrors=[mirror.url()])
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    cap = download_cap(release, "train-labels-idx1-ubyte")
    assert f"train-labels-idx1-ubyte.gz: body is over the {cap} bytes this file can be" in str(info.value)
    assert grown_mb < 50, f"peak RSS grew {grown_mb:.0f} MB"
    assert_nothing_written(raw_dir)


def test_an_announced_huge_length_is_refused_before_reading(raw_dir, release, fetch, mirror):
    mirror.behaviour["/fashion/t10k-labels-idx1-ubyte.gz"] = "huge_length"
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, mirrors=[mirror.url()])
    cap = download_cap(release, "t10k-labels-idx1-ubyte")
    assert (f"t10k-labels-idx1-ubyte.gz: Content-Length 1000000000000 is over the {cap} bytes this file can be"
            in str(info.value))
    assert_nothing_written(raw_dir)


def test_a_redirect_loop_fails_with_one_clear_reason(raw_dir, fetch, mirror):
    mirror.behaviour["/fashion/train-labels-idx1-ubyte.gz"] = "redirect_loop"
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, mirrors=[mirror.url()])
    assert "train-labels-idx1-ubyte.gz: HTTP 302" in str(info.value) or "redirect" in str(info.value)
    assert_nothing_written(raw_dir)


def test_a_small_gzip_that_inflates_past_the_files_size_is_refused(tmp_path, raw_dir, release, fetch, system_copy):
    """A gzip bomb in a local directory: refused once the file's own size is passed, not inflated whole."""
    name = "train-labels-idx1-ubyte"
    local = copy_system_dir(system_copy, tmp_path / "local")
    (local / f"{name}.gz").unlink()
    with gzip.open(local / f"{name}.gz", "wb", compresslevel=9) as f:
        for _ in range(16):
            f.write(b"\0" * (1 << 20))  # 16 MB of zeros in about 16 KB of gzip: under the file size cap
    assert (local / f"{name}.gz").stat().st_size < download_cap(release, name)
    with pytest.raises(DataSourceError) as info:
        fetch(raw_dir, local_dir=str(local))
    assert f"decompresses to more than the {release.sizes[name]} bytes allowed" in str(info.value)
