"""Files on disk: atomic writes, temp files a killed run leaves behind, and reading our own JSON."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from doubleword.config import redact
from doubleword.errors import InputError


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` so that a crash leaves either the old or the new file, never half."""
    target = Path(path)
    with _atomic_target(target) as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, redact(json.dumps(obj, indent=2, ensure_ascii=False)) + "\n")


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` only if the block completes."""
    with _atomic_target(Path(path)) as handle:
        yield handle


@contextlib.contextmanager
def _atomic_target(target: Path) -> Iterator[IO[bytes]]:
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(target)
    fd, tmp = temp_file_beside(target)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def temp_file_beside(target: Path) -> tuple[int, str]:
    """A new temp file in ``target``'s folder, named so a later run can remove it if this one dies."""
    prefix = f".{target.name}.{os.getpid()}."
    try:
        return tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=target.parent)
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
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(".tmp")]
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


def read_json_file(path: str | os.PathLike[str], what: str) -> Any:
    """Load a JSON file we wrote earlier, with a clear error if it is missing or damaged."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist")
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{what} {path} is not readable JSON ({exc}); fix or remove it")
