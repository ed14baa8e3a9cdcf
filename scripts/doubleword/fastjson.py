"""An optional accelerator for the per-line JSON work of fetch (decoding, records) and of create (encoding
request lines, :func:`doubleword.batchfile.encode_line`): orjson, when it is installed.

The standard library is the reference and the only requirement: every caller has a plain path, and
``DOUBLEWORD_PURE_JSON=1`` switches the accelerator off (the suite runs the fetch tests both ways).
orjson is stricter than the standard library (no NaN, integers within 64 bits, valid UTF-8 only), so a
line it refuses is not judged by it: callers fall back to the plain path, which decides.

Measured on 50,000 chat lines of ~950 bytes (the repository's benchmarks have the whole-command figure): the decode and
the record encoding take about 0.4 s with orjson and 0.7 s with the standard library. Encoding 50,000 such
requests: 1.9 us a line with orjson, 10.5 us with the standard library.

``dumps`` hands datetimes, dataclasses and subclasses of the JSON types (which orjson would write in its
own way) to no default, so it refuses them like any other type it does not know and the caller's plain
path decides, as the standard library would.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import partial
from typing import Any

loads: Callable[[bytes], Any] | None = None
dumps: Callable[[Any], bytes] | None = None

if os.environ.get("DOUBLEWORD_PURE_JSON", "") in ("", "0"):
    try:
        import orjson
    except ImportError:  # the plain path
        pass
    else:
        loads = orjson.loads
        dumps = partial(
            orjson.dumps,
            option=orjson.OPT_PASSTHROUGH_DATETIME
            | orjson.OPT_PASSTHROUGH_DATACLASS
            | orjson.OPT_PASSTHROUGH_SUBCLASS,
        )
