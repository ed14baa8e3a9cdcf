"""`from emulator_server import EmulatorServer` for tests and the bench: the one launcher lives in the
emulator package (emulator/launcher.py), shared with the demo."""

from __future__ import annotations

import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # a bench run puts only tests/ on the path
    sys.path.append(str(REPO_ROOT))

from emulator.launcher import EmulatorServer  # noqa: E402

__all__ = ["REPO_ROOT", "EmulatorServer"]
