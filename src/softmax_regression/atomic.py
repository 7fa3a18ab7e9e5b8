"""Writing outputs so that a failure never leaves a half-written file or directory.

Everything is first written next to its target (same filesystem) and then
renamed into place, which is atomic on POSIX. A stage with several outputs
stages them all (:class:`StagedOutputs`) and renames them in one final step,
so its outputs change together or not at all.

A temporary is named ``.<target name>.<pid>.<random>.tmp`` (``.old`` for a
directory moved aside): one that a killed process left behind is removed
the next time its target is written.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[^.]+\.(?:tmp|old)$")


def _prefix(target: Path) -> str:
    return f".{target.name}.{os.getpid()}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporaries of ``target`` that a process no longer running left behind; returns them."""
    target = Path(target)
    removed = []
    if not target.parent.is_dir():
        return removed
    for entry in target.parent.iterdir():
        match = _TEMPORARY.match(entry.name)
        if not match or match["name"] != target.name or _alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        log.info("removed %s, left by a process that was killed", entry)
    return removed


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block is done, then reach their handlers (on the main thread; elsewhere
    a no-op). The handlers are swapped for ones that only take note: a signal mask would hold them off this
    thread only, and the kernel hands a process's signal to any thread that does not block it (torch's own
    threads), whose note makes Python raise in this one all the same."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: received.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(received):
            signal.raise_signal(signum)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary directory; on success it takes the place of ``target``.

    An existing ``target`` is moved aside first and only deleted once the new
    one is in place, so it survives any failure.
    """
    target = Path(target)
    try:
        tmp = _make_temporary_dir(target)
    except OSError as exc:
        raise _write_failure(target, exc) from exc
    try:
        yield tmp
        _replace_dir(tmp, target)
    except OSError as exc:
        if not _is_disk_error(exc):
            raise
        raise _write_failure(target, exc) from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _make_temporary_file(target: Path, mode: int = 0o644) -> tuple[int, Path]:
    """An open descriptor and the path of a new temporary file beside ``target`` with permission bits
    ``mode`` before a byte is written; the temporaries a killed process left for ``target`` are removed
    first."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    fd, name = tempfile.mkstemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent)
    tmp = Path(name)
    os.fchmod(fd, mode)  # mkstemp's 0600 would otherwise become the output's mode
    return fd, tmp


def _make_temporary_dir(target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target)
    tmp = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would otherwise become the output's mode
    return tmp


def _replace_dir(tmp: Path, target: Path) -> None:
    """Put directory ``tmp`` in the place of ``target``; an existing target is moved aside, then deleted."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=_prefix(target), suffix=".old", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_bytes(target: str | Path, data: bytes, mode: int = 0o644, durable: bool = False) -> None:
    """Replace ``target`` with ``data``, whole or not at all; the file has permission bits ``mode``
    from its first byte (0o600 for a secret). ``durable`` also syncs the data and the rename to disk,
    for a file a crash must not lose (a user's own file rewritten, not an output a rerun remakes)."""
    target = Path(target)
    fd, tmp = _make_temporary_file(target, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    if durable:
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)  # the rename itself
        except OSError:
            pass  # a file system that cannot sync a folder: the file is in place all the same
        finally:
            os.close(folder)


def write_text(target: str | Path, text: str, mode: int = 0o644, durable: bool = False) -> None:
    write_bytes(target, text.encode("utf-8"), mode=mode, durable=durable)


def json_text(obj: Any) -> str:
    """JSON with sorted keys and a trailing newline, so equal content gives equal bytes."""
    return json.dumps(obj, indent=2, sort_keys=True) + "\n"


class OutputError(OSError):
    """An output could not be written (a full disk, a read-only folder); the message names it."""

    def __str__(self) -> str:
        return self.strerror


_DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def _is_disk_error(exc: OSError) -> bool:
    """A write that failed for want of room or permission (or, errno-less, as numpy reports it), not
    already named by :class:`OutputError`."""
    return not isinstance(exc, OutputError) and (exc.errno in _DISK_ERRORS or exc.errno is None)


def _write_failure(target: Path, exc: OSError) -> OutputError:
    return OutputError(exc.errno, f"cannot write {target}: {exc.strerror or exc}")


class StagedOutputs:
    """A stage's outputs, each written to a temporary beside its target and renamed into place together.

    Write everything (``write_bytes``, ``write_text``, ``write_json``, or fill
    ``directory(target)``), then call :meth:`commit`: the renames run back to
    back with SIGINT and SIGTERM held off, so an interrupted or failed stage
    leaves every previous output as it was. Leaving the ``with`` block
    without committing discards the temporaries.
    """

    def __init__(self) -> None:
        self._staged: list[tuple[Path, Path]] = []  # (temporary, target)
        self.committed = False

    def __enter__(self) -> "StagedOutputs":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self.committed:
            return
        culprit = self._full_target(exc) if isinstance(exc, OSError) and _is_disk_error(exc) else None
        self.discard()
        if culprit is not None:  # name the output, not an anonymous "[Errno 28]" from deep in a writer
            raise _write_failure(culprit, exc) from exc

    def _full_target(self, exc: OSError) -> Path | None:
        """The staged output an anonymous disk error most likely came from: the one named in it, else
        the first whose folder has (next to) no space left, else the only one."""
        for _, target in self._staged:
            if exc.filename and str(target.name) in str(exc.filename):
                return target
        for _, target in self._staged:
            try:
                free = os.statvfs(target.parent)
            except OSError:
                continue
            if free.f_bavail * free.f_frsize < 1 << 20:
                return target
        return self._staged[0][1] if len(self._staged) == 1 else None

    def _stage(self, target: str | Path) -> Path:
        target = Path(target)
        if any(t == target for _, t in self._staged):
            raise ValueError(f"output {target} staged twice")
        return target

    def write_bytes(self, target: str | Path, data: bytes) -> None:
        target = self._stage(target)
        try:
            fd, tmp = _make_temporary_file(target)
            self._staged.append((tmp, target))
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        except OSError as exc:
            raise _write_failure(target, exc) from exc

    def write_text(self, target: str | Path, text: str) -> None:
        self.write_bytes(target, text.encode("utf-8"))

    def write_json(self, target: str | Path, obj: Any) -> None:
        self.write_text(target, json_text(obj))

    def directory(self, target: str | Path) -> Path:
        """An empty temporary directory to fill; at commit it takes the place of ``target``."""
        target = self._stage(target)
        try:
            tmp = _make_temporary_dir(target)
        except OSError as exc:
            raise _write_failure(target, exc) from exc
        self._staged.append((tmp, target))
        return tmp

    def commit(self) -> None:
        """Rename every temporary into place, one after another, with SIGINT and SIGTERM held off."""
        if self.committed:
            raise RuntimeError("outputs already committed")
        for tmp, target in self._staged:  # what no rename replaces, refused before the first one renames
            if not tmp.is_dir() and target.is_dir() and not target.is_symlink():
                raise _write_failure(target, IsADirectoryError(errno.EISDIR, "a directory is in its place"))
        try:
            with signals_deferred():
                for tmp, target in self._staged:
                    if tmp.is_dir():
                        _replace_dir(tmp, target)
                    else:
                        os.replace(tmp, target)
                self.committed = True
        except KeyboardInterrupt as exc:  # held off until the outputs were in place: say so
            exc.outputs_written = self.committed
            raise

    def discard(self) -> None:
        for tmp, _ in self._staged:
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
        self._staged.clear()
