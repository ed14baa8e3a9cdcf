"""An optional accelerator for fetch's per-line JSON work: orjson, when it is installed.

The standard library is the reference and the only requirement: every caller has a plain path, and
``DOUBLEWORD_PURE_JSON=1`` switches the accelerator off (the suite runs the fetch tests both ways).
orjson is stricter than the standard library (no NaN, integers within 64 bits, valid UTF-8 only), so a
line it refuses is not judged by it: callers fall back to the plain path, which decides.

Measured on 50,000 chat lines of ~950 bytes (the repository's benchmarks have the whole-command figure): the decode and
the record encoding take about 0.4 s with orjson and 0.7 s with the standard library.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

loads: Callable[[bytes], Any] | None = None
dumps: Callable[[Any], bytes] | None = None

if os.environ.get("DOUBLEWORD_PURE_JSON", "") in ("", "0"):
    try:
        import orjson
    except ImportError:  # the plain path
        pass
    else:
        loads, dumps = orjson.loads, orjson.dumps
