"""Run one of scripts/*.py exactly as the command line would, timing its phases and its peak memory.

Usage: python bench/probe.py REPORT.json scripts/NAME.py [ARGS ...]

The script runs as ``__main__`` in this process (so its imports, start-up and exit are all measured);
the only change is a timer around two library calls: ``ApiClient.upload_file`` (the upload phase of
submit.py) and ``results.join`` (the join phase of fetch_results.py). REPORT.json receives the wall time
of the whole run, of each phase, the exit code and VmHWM (peak resident memory of this process alone;
``ru_maxrss`` would also count the parent's pages inherited through fork).
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def peak_rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def timed(owner: Any, name: str, phases: dict[str, list[float]], label: str) -> None:
    original = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            phases.setdefault(label, []).append(time.perf_counter() - start)

    setattr(owner, name, wrapper)


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    report_path, script, *args = argv
    sys.path.insert(0, str(SCRIPTS))
    phases: dict[str, list[float]] = {}
    from doubleword import client as http_client
    from doubleword import results

    timed(http_client.ApiClient, "upload_file", phases, "upload")
    timed(results, "join", phases, "join")
    sys.argv = [script, *args]
    code: Any = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as exc:
        code = exc.code
    report = {
        "seconds": time.perf_counter() - start,
        "phases": {k: sum(v) for k, v in phases.items()},
        "exit": code if isinstance(code, int) else (0 if code is None else 1),
        "peak_rss_kib": peak_rss_kib(),
    }
    Path(report_path).write_text(json.dumps(report))
    return int(report["exit"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
