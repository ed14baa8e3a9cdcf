"""The library behind the commands in ``scripts/``: each command is a thin ``main`` over these modules.

``scripts/`` is first on ``sys.path`` when a command runs, so ``import doubleword`` works with nothing
installed but the two runtime dependencies, ``requests`` and ``jsonschema``. Without one of them a command
still ends as every command does: one JSON document on stdout naming what to install, exit 3,
even when the import fails before the command's ``main`` runs (the hook below).
"""

from __future__ import annotations

import json
import os
import sys
from types import TracebackType


def _fail(kind: str, message: str, code: int = 3) -> None:
    """End the command as every command ends on failure (JSON on stdout, a closing line, exit 3)."""
    doc = {"ok": False, "error": {"type": kind, "message": message}}
    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    prog = os.path.basename(sys.argv[0]) or "doubleword"
    sys.stderr.write(f"error: {message}\n{prog}: failed (exit {code}, {kind}): {message}\n")
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # nothing else runs yet: an import failed, or this Python is too old to run the rest


if sys.version_info < (3, 10):  # noqa: UP036 - the modules below need 3.10; without this, a traceback
    _fail(
        "unsupported_python",
        f"these scripts need Python 3.10 or newer; {sys.executable} is "
        f"{'.'.join(map(str, sys.version_info[:3]))}: run them with a newer python3",
    )

# The runtime dependencies and what they bring with them (requests' own dependencies).
RUNTIME_PACKAGES = frozenset({"requests", "jsonschema", "urllib3", "idna", "certifi", "charset_normalizer"})


def missing_dependency(exc: BaseException) -> str | None:
    """The message for a runtime dependency that is not installed, or None for any other error."""
    name = getattr(exc, "name", None) or ""
    if not isinstance(exc, ModuleNotFoundError) or name.split(".")[0] not in RUNTIME_PACKAGES:
        return None
    return (
        f"the Python package {name.split('.')[0]!r} is not installed for {sys.executable}; install the "
        f"runtime dependencies: {sys.executable} -m pip install requests jsonschema "
        "(or -r requirements.txt beside SKILL.md)"
    )


def _hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
    if isinstance(exc, KeyboardInterrupt):  # Ctrl-C while the modules load, before main (it has its own)
        _fail("interrupted", "interrupted while starting, before anything was done: re-run the command", 130)
    message = missing_dependency(exc)
    if message is None:
        _previous(kind, exc, tb)
        return
    _fail("missing_dependency", message)


_previous = sys.excepthook
sys.excepthook = _hook
