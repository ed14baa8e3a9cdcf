"""Files on disk: atomic writes, temp files a killed run leaves behind, locks, and reading our own JSON.

Every file the scripts write gets the same permissions: what the user's umask gives a new file (a temp
file from ``mkstemp`` would otherwise stay 0600), or the mode the file already had. A symlink is written
through: its target is replaced and the link stays. A write that fails names the file it was for.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

from doubleword.errors import InputError
from doubleword.redaction import redact_data


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file, never half."""
    target = Path(path)
    with _atomic_target(target) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """``obj`` as our JSON files hold it: indented, UTF-8 kept, secrets redacted."""
    return json.dumps(redact_data(obj), indent=2, ensure_ascii=False) + "\n"


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` only if the block completes."""
    with _atomic_target(Path(path)) as handle:
        yield handle


@contextlib.contextmanager
def _atomic_target(target: Path) -> Iterator[IO[bytes]]:
    file = AtomicFile(target)
    try:
        with naming_errors(file.target), os.fdopen(file.fd, "wb", closefd=False) as handle:
            yield handle
        file.install()
    except BaseException:
        file.discard()
        raise


class AtomicFile:
    """A temp file beside ``path`` that replaces it only when installed: discarded (or left by a killed run,
    which a later run removes), ``path`` stays as it was. Written through its descriptor ``fd``."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.target = real_target(Path(path))
        self.target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.target)
        self.mode = _mode_for(self.target)
        self.fd, self.tmp = temp_file_beside(self.target)

    def install(self) -> None:
        """Synced, then put in place of ``path`` (a reader sees the old file or the whole new one)."""
        with naming_errors(self.target):
            os.fchmod(self.fd, self.mode)
            os.fsync(self.fd)
            os.close(self.fd)
            self.fd = -1
            os.replace(self.tmp, self.target)
            self.tmp = ""

    def discard(self) -> None:
        """Closed and removed, unless installed."""
        with contextlib.suppress(OSError):
            if self.fd >= 0:
                os.close(self.fd)
        self.fd = -1
        if self.tmp:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = ""


class LinkedFile:
    """``path`` made a second name of an existing file (a hard link: not a byte copied), put in place
    as :class:`AtomicFile` puts its temp file. :meth:`make` returns None where the file system cannot link
    (another file system, or none with links): the caller writes a copy instead."""

    def __init__(self, tmp: str, target: Path) -> None:
        self.tmp, self.target = tmp, target

    @classmethod
    def make(cls, source: Path, path: str | os.PathLike[str]) -> LinkedFile | None:
        target = real_target(Path(path))
        remove_stale_temps(target)
        mode = _mode_for(target)
        tmp = str(target.parent / f"{temp_prefix(target)}{os.urandom(4).hex()}{TEMP_SUFFIX}")
        try:
            descriptor = os.open(source, os.O_RDONLY)
            try:
                os.fsync(descriptor)  # durable before its new name says it is there (as install's sync)
            finally:
                os.close(descriptor)
            os.link(source, tmp)
        except OSError:
            return None
        linked = cls(tmp, target)
        try:
            os.chmod(tmp, mode)
        except OSError:
            linked.discard()
            return None
        return linked

    def install(self) -> None:
        with naming_errors(self.target):
            if self.target.exists() and os.path.samefile(self.tmp, self.target):
                os.unlink(self.tmp)  # already its name (a rename between two names of one file does nothing)
            else:
                os.replace(self.tmp, self.target)
        self.tmp = ""

    def discard(self) -> None:
        if self.tmp:
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)
            self.tmp = ""


COPY_PIECE = 1 << 20
COPY_SPAN = 1 << 20  # small ranges' bytes gathered before one write (RangeCopier.append_all)


class RangeCopier:
    """Byte ranges of one file appended to others: by the system where it can (``copy_file_range``: the
    bytes never pass through this process), else in pieces (memory stays flat), from wherever the system
    refused, even part-way."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source = source
        self.kernel = hasattr(os, "copy_file_range")

    def append(self, start: int, end: int, dest: int) -> None:
        """Bytes ``start`` to ``end`` of the source appended to the file descriptor ``dest``, at its position."""
        if self.kernel:
            try:
                while start < end:
                    copied = os.copy_file_range(self.source.fileno(), dest, end - start, start)
                    if copied <= 0:
                        break
                    start += copied
            except OSError:  # a file system that cannot: the pieces go on from where it stopped
                self.kernel = False
        self.source.seek(start)
        while start < end:
            piece = self.source.read(min(COPY_PIECE, end - start))
            if not piece:
                name = os.path.basename(str(self.source.name))
                raise OSError(f"{name} ended at byte {start} of {end} (changed while being copied?)")
            _write_all(dest, piece)
            start += len(piece)

    def append_all(self, ranges: Iterable[tuple[int, int]], dest: int) -> None:
        """Ranges appended in turn. Small ones (answers put back in input order from a stretch written in
        completion order: a range each, scattered over a few MB) are read one by one and written
        COPY_SPAN at a time, so that the writes are few and nothing is read twice or held long."""
        pieces: list[bytes] = []
        held = 0
        source = self.source.fileno()
        for start, end in ranges:
            if end - start >= COPY_SPAN:
                _write_all(dest, b"".join(pieces))
                pieces, held = [], 0
                self.append(start, end, dest)
                continue
            piece = os.pread(source, end - start, start)
            if len(piece) < end - start:
                name = os.path.basename(str(self.source.name))
                raise OSError(
                    f"{name} ended at byte {start + len(piece)} of {end} (changed while being copied?)"
                )
            pieces.append(piece)
            held += len(piece)
            if held >= COPY_SPAN:
                _write_all(dest, b"".join(pieces))
                pieces, held = [], 0
        _write_all(dest, b"".join(pieces))


def _write_all(dest: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(dest, view) :]


def real_target(path: Path) -> Path:
    """Where a write to ``path`` should land: through a symlink to its target, so the link stays."""
    if path.is_symlink():
        return Path(os.path.realpath(path))
    return path


def new_file_mode() -> int:
    """The mode a new file gets from the user's umask (read once; the umask is process-wide)."""
    global _NEW_FILE_MODE
    if _NEW_FILE_MODE is None:
        mask = os.umask(0o022)
        os.umask(mask)
        _NEW_FILE_MODE = 0o666 & ~mask
    return _NEW_FILE_MODE


_NEW_FILE_MODE: int | None = None


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except OSError:
        return new_file_mode()


@contextlib.contextmanager
def naming_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Give an OSError that names no file (a full disk, say) the file that was being written."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise


TEMP_SUFFIX = ".tmp"


def temp_prefix(target: Path) -> str:
    """How this process's temp names beside ``target`` begin: ``.NAME.PID.`` (then a random part and
    :data:`TEMP_SUFFIX`), so that :func:`remove_stale_temps` can tell whose they are."""
    return f".{target.name}.{os.getpid()}."


def temp_file_beside(target: Path) -> tuple[int, str]:
    """A new temp file in ``target``'s folder, named so a later run can remove it if this one dies."""
    try:
        return tempfile.mkstemp(prefix=temp_prefix(target), suffix=TEMP_SUFFIX, dir=target.parent)
    except OSError as exc:  # name the file the user asked for, not our temp file
        raise OSError(exc.errno, f"{exc.strerror} (cannot create files in {target.parent})", str(target))


_SWEPT: set[Path] = set()


def remove_stale_temps(target: Path) -> None:
    """Delete temp files a killed run (SIGKILL, power loss) left beside ``target``, once per process.

    Temp names carry the writer's pid: only files whose writer is gone are removed, so a run working
    on the same folder at the same time keeps its own."""
    if target in _SWEPT:
        return
    _SWEPT.add(target)
    prefix = f".{target.name}."
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(TEMP_SUFFIX)]
    except OSError:
        return
    for name in names:
        pid_text = name[len(prefix) :].split(".", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            os.unlink(target.parent / name)


def _pid_alive(pid: int) -> bool:
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


@contextlib.contextmanager
def exclusive_lock(path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an advisory lock on ``path``; yields False when ``wait`` is False and another run holds it.

    The lock file is removed when released, so none pile up; a run that opened the file just before
    it was removed sees that its file is no longer the one at ``path`` and locks again. Locks die with
    their process, so a killed run never blocks the next (its file is reused)."""
    if fcntl is None:  # pragma: no cover - not POSIX
        yield True
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        with naming_errors(path):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, new_file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            yield False
            return
        if _same_file(fd, path):
            break
        os.close(fd)  # removed (or replaced) by the run that held it: lock the file there now
    try:
        yield True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # while still holding it: nobody can lock this file after us
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Load a manifest (``what``: how to name it) with a clear error if it is missing or damaged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"{what} {path} is not readable JSON ({exc}); repair it where the error points (it records the "
            "job's batches: without it submit.py would send the job again, paid twice), or give poll and "
            "fetch the batch ids instead"
        )
