"""Where Fashion-MNIST comes from, and proof that what we got is the real thing.

Sources are tried in a fixed order (already fetched, the Debian system copy,
a directory of the user's, then download mirrors). Every file is checked by
the SHA-256 of its *decompressed* bytes: Debian recompresses the official
``.gz`` files, so their gzip bytes differ while the content is identical.
"""

from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from tqdm.auto import tqdm

from softmax_regression.atomic import atomic_dir
from softmax_regression.checksums import sha256_hex
from softmax_regression.data.idx import IdxError, decompress_if_gzip
from softmax_regression.filetypes import not_a_regular_file

log = logging.getLogger(__name__)

RAW_SHA256 = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
"""SHA-256 of the four decompressed IDX files of the official release."""

RAW_SIZES = {
    "train-images-idx3-ubyte": 47_040_016,
    "train-labels-idx1-ubyte": 60_008,
    "t10k-images-idx3-ubyte": 7_840_016,
    "t10k-labels-idx1-ubyte": 10_008,
}
"""Sizes of the four decompressed files: a download is cut off beyond them, and so is decompression."""

GZIP_SLACK = 1 << 16
"""What a gzip file may exceed its content by (header and stored blocks)."""


@dataclass(frozen=True)
class Release:
    """The files a fetch must deliver: per file name, the SHA-256 and the size of its decompressed bytes.

    The fetch functions verify against the release they are given rather than
    against module constants, so that one code path serves the official files
    (:data:`FASHION_MNIST`) and any other set pinned the same way, such as the
    tiny synthetic release the unit tests write.
    """

    sha256: Mapping[str, str]
    """SHA-256 of each decompressed file, in the order every source reads them."""
    sizes: Mapping[str, int]
    """Size of each decompressed file: a download is cut off beyond it (plus GZIP_SLACK), and so is decompression."""

    def __post_init__(self) -> None:
        if list(self.sha256) != list(self.sizes):
            raise ValueError(f"a release pins the same files by SHA-256 and by size: {list(self.sha256)} "
                             f"against {list(self.sizes)}")
        # read-only copies: a caller's dict changed later cannot change what is verified
        object.__setattr__(self, "sha256", MappingProxyType(dict(self.sha256)))
        object.__setattr__(self, "sizes", MappingProxyType(dict(self.sizes)))

    @property
    def names(self) -> tuple[str, ...]:
        """The file names, in the order every source reads them."""
        return tuple(self.sha256)


FASHION_MNIST = Release(sha256=RAW_SHA256, sizes=RAW_SIZES)
"""The official Fashion-MNIST release: what every fetch delivers unless told otherwise."""

HOW_TO_GET_DATA = (
    "install the system copy with `apt-get install -y dataset-fashion-mnist`, or set "
    "data.local_dir in params.yaml to a directory holding the four Fashion-MNIST IDX files (.gz or not)"
)


class DataSourceError(RuntimeError):
    """No source could provide verified Fashion-MNIST files."""


class SourceFailed(Exception):
    """One source could not provide the files; the next one is tried."""


@dataclass
class FetchResult:
    source: str
    """Which source provided the files."""
    skipped: list[str] = field(default_factory=list)
    """Why each earlier source was passed over."""


def verified(name: str, content: bytes, origin: str, release: Release = FASHION_MNIST) -> bytes:
    """``content`` if its SHA-256 is the one ``release`` pins for ``name``, else SourceFailed."""
    digest = sha256_hex(content)
    expected = release.sha256[name]
    if digest != expected:
        raise SourceFailed(f"{origin}: {name} has SHA-256 {digest[:12]}..., expected {expected[:12]}...")
    return content


def read_directory(directory: str | Path, release: Release = FASHION_MNIST) -> dict[str, bytes]:
    """The verified files of ``release`` from a directory holding them plain or gzipped; a directory or
    file that cannot be read fails this source only, so the next one is tried."""
    try:
        return _read_directory(Path(directory), release)
    except OSError as exc:
        where = exc.filename or directory
        raise SourceFailed(f"{where}: cannot be read ({exc.strerror or exc})") from None


def _read_directory(directory: Path, release: Release) -> dict[str, bytes]:
    if not directory.is_dir():
        raise SourceFailed(f"{directory}: no such directory")
    files = {}
    for name in release.names:
        candidates = [directory / name, directory / f"{name}.gz"]
        for candidate in candidates:  # checked before opening: a named pipe without a writer blocks forever
            kind = not_a_regular_file(candidate)
            if kind is not None:
                raise SourceFailed(f"{candidate}: is {kind}, not a regular file")
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise SourceFailed(f"{directory}: {name}[.gz] missing")
        if path.stat().st_size > release.sizes[name] + GZIP_SLACK:
            raise SourceFailed(f"{path}: {path.stat().st_size} bytes, more than {name} can be")
        try:
            content = decompress_if_gzip(path.read_bytes(), str(path), max_size=release.sizes[name])
        except IdxError as exc:
            raise SourceFailed(str(exc)) from None
        files[name] = verified(name, content, str(directory), release)
    return files


class DownloadLimit(Exception):
    """A download went over its size cap or its deadline: not retried."""


def _watched_opener(sockets: list[socket.socket]) -> urllib.request.OpenerDirector:
    """``urlopen``'s opener, keeping each connection's socket in ``sockets``: ``timeout`` bounds each read only,
    and a server may send its status line and headers a byte at a time, inside ``urlopen``, where no loop of
    ours can check the deadline. Shutting the socket down ends that read."""
    def watched(connection_class: type) -> type:
        class Watched(connection_class):
            def connect(self) -> None:
                super().connect()
                sockets.append(self.sock)
        return Watched

    class Http(urllib.request.HTTPHandler):
        def http_open(self, req):
            return self.do_open(watched(http.client.HTTPConnection), req)

    class Https(urllib.request.HTTPSHandler):
        def https_open(self, req):
            extra = {} if getattr(self, "_check_hostname", None) is None else {"check_hostname": self._check_hostname}
            return self.do_open(watched(http.client.HTTPSConnection), req, context=self._context, **extra)

    return urllib.request.build_opener(Http, Https)


def _cut(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:  # closed already
            pass


def download(url: str, timeout: float, retries: int, progress: bool = True, max_bytes: int | None = None,
             deadline: float | None = None) -> bytes:
    """The body of ``url``; network errors are retried ``retries`` times, a 4xx is not.

    ``timeout`` bounds each stall; ``deadline`` (seconds) bounds the whole
    download, retries included, so a server that trickles a byte at a time
    ends too, its headers as well as its body (the connection is shut down
    then); a body over ``max_bytes`` is cut off (not read into memory).
    """
    give_up = None if deadline is None else time.monotonic() + deadline
    sockets: list[socket.socket] = []
    timer = None
    if deadline is not None:
        timer = threading.Timer(deadline, _cut, [sockets])
        timer.daemon = True
        timer.start()
    try:
        return _download(url, _watched_opener(sockets), timeout, retries, progress, max_bytes, deadline, give_up)
    finally:
        if timer is not None:
            timer.cancel()


def _download(url: str, opener: urllib.request.OpenerDirector, timeout: float, retries: int, progress: bool,
              max_bytes: int | None, deadline: float | None, give_up: float | None) -> bytes:
    last_error = "no attempt"
    late = f"not done within the {deadline:g} s deadline (data.deadline)" if deadline is not None else ""

    def past_deadline() -> bool:
        return give_up is not None and time.monotonic() > give_up

    def check_deadline() -> None:
        if past_deadline():
            raise DownloadLimit(late)

    for attempt in range(1 + retries):
        if attempt:
            time.sleep(min(0.5 * 2 ** (attempt - 1), 5.0))
            log.info("retrying %s (attempt %d of %d)", url, attempt + 1, 1 + retries)
        try:
            check_deadline()
            with opener.open(url, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                if max_bytes is not None and total is not None and total > max_bytes:
                    raise DownloadLimit(f"Content-Length {total} is over the {max_bytes} bytes this file can be")
                chunks, size = [], 0
                with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1],
                          disable=not progress, leave=False) as bar:
                    while chunk := response.read1(1 << 16):  # what has arrived: the deadline is checked often
                        size += len(chunk)
                        if max_bytes is not None and size > max_bytes:
                            raise DownloadLimit(f"body is over the {max_bytes} bytes this file can be")
                        check_deadline()
                        chunks.append(chunk)
                        bar.update(len(chunk))
                body = b"".join(chunks)
                if total is not None and len(body) != total:
                    raise OSError(f"truncated: got {len(body)} of {total} bytes")
                return body
        except DownloadLimit as exc:
            last_error = str(exc)
            break
        except urllib.error.HTTPError as exc:
            last_error = f"HTTP {exc.code}"
            if 400 <= exc.code < 500:
                break
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            if past_deadline():  # the deadline shut the connection down under a read
                last_error = late
                break
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, str):  # urllib's own words on the URL ("no host given"): no retry helps
                last_error = reason
                break
            last_error = f"{type(reason).__name__}: {reason}" if str(reason) else type(reason).__name__
        except ValueError as exc:  # urllib cannot parse the URL (an unclosed IPv6 bracket): no retry helps
            last_error = f"invalid URL ({exc})"
            break
    raise SourceFailed(f"{url}: {last_error}")


def read_mirror(base_url: str, timeout: float, retries: int, progress: bool = True,
                deadline: float | None = None, release: Release = FASHION_MNIST) -> dict[str, bytes]:
    """The verified files of ``release`` downloaded from a mirror of its ``.gz`` files.

    Each download is bounded by ``deadline`` and by the file's own size (its
    decompressed size plus gzip's slack), and so is its decompression.
    """
    base = base_url if base_url.endswith("/") else base_url + "/"
    files = {}
    for name in release.names:
        url = f"{base}{name}.gz"
        body = download(url, timeout=timeout, retries=retries, progress=progress,
                        max_bytes=release.sizes[name] + GZIP_SLACK, deadline=deadline)
        try:
            content = decompress_if_gzip(body, url, max_size=release.sizes[name])
        except IdxError as exc:
            raise SourceFailed(str(exc)) from None
        files[name] = verified(name, content, url, release)
    return files


def raw_is_complete(raw_dir: str | Path, release: Release = FASHION_MNIST) -> bool:
    """Whether ``raw_dir`` already holds the verified, decompressed files of ``release``."""
    raw_dir = Path(raw_dir)
    for name, digest in release.sha256.items():
        path = raw_dir / name
        if not path.is_file() or sha256_hex(path.read_bytes()) != digest:
            return False
    return True


def fetch_fashion_mnist(
    raw_dir: str | Path,
    system_dir: str | None,
    local_dir: str | None,
    mirrors: list[str],
    timeout: float = 30,
    retries: int = 2,
    progress: bool = True,
    deadline: float | None = None,
    release: Release = FASHION_MNIST,
) -> FetchResult:
    """Put the verified, decompressed IDX files of ``release`` into ``raw_dir``, from the first source that
    has them.

    ``raw_dir`` is replaced as a whole or not at all.
    """
    raw_dir = Path(raw_dir)
    if raw_is_complete(raw_dir, release):
        return FetchResult(source=f"{raw_dir} (already fetched)")
    skipped = [f"{raw_dir}: not fetched yet"]
    attempts: list[tuple[str, object]] = []
    attempts.append((f"system copy {system_dir}" if system_dir else "system copy (data.system_dir unset)",
                     (lambda: read_directory(system_dir, release)) if system_dir else None))
    attempts.append((f"data.local_dir {local_dir}" if local_dir else "data.local_dir (unset)",
                     (lambda: read_directory(local_dir, release)) if local_dir else None))
    for mirror in mirrors:
        attempts.append((f"mirror {mirror}",
                         lambda m=mirror: read_mirror(m, timeout, retries, progress, deadline, release)))
    for label, attempt in attempts:
        if attempt is None:
            skipped.append(f"{label}: not set")
            continue
        try:
            files = attempt()
        except SourceFailed as exc:
            log.warning("source skipped: %s", exc)
            skipped.append(str(exc))
            continue
        with atomic_dir(raw_dir) as tmp:
            for name, content in files.items():
                (tmp / name).write_bytes(content)
        log.info("fetched Fashion-MNIST from %s into %s", label, raw_dir)
        return FetchResult(source=label, skipped=skipped)
    raise DataSourceError(
        "no source provided verified Fashion-MNIST (" + "; ".join(skipped) + "): " + HOW_TO_GET_DATA
    )
