"""Run one of scripts/*.py exactly as the command line would, timing its phases and its peak memory.

Usage: python bench/probe.py REPORT.json scripts/NAME.py [ARGS ...]

The script runs as ``__main__`` in this process (so its imports, start-up and exit are all measured);
the only change is a timer around a few library calls, where they exist (``TIMED``):
``ApiClient.upload_file`` (the upload phase of submit.py), ``api.create_batch`` and ``results.join`` (the
separate join pass fetch_results.py had before issue 15). REPORT.json receives the wall time of the whole run, of each phase (summed over calls, which may
overlap when they run in threads), each call's start and end from the run's start (``calls``), the exit
code and VmHWM (peak resident memory of this process alone; ``ru_maxrss`` would also count the parent's
pages inherited through fork).

With PROBE_PROFILE=FILE in the environment the script runs under cProfile and its stats go to FILE.
"""

from __future__ import annotations

import importlib
import json
import os
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


START = time.perf_counter()


# Per command: (module, owner in it or "", function, phase label), timed where they exist. Only the
# command's own modules are imported, so the peak memory of the others is not inflated.
TIMED = {
    "submit.py": (
        ("doubleword.client", "ApiClient", "upload_file", "upload"),
        ("doubleword.api", "", "create_batch", "create"),
    ),
    "fetch_results.py": (("doubleword.results", "", "join", "join"),),
}


def timed(module: str, owner_name: str, name: str, calls: list[tuple[str, float, float]], label: str) -> None:
    try:
        owner: Any = importlib.import_module(module)
    except ImportError:
        return
    owner = getattr(owner, owner_name, None) if owner_name else owner
    original = getattr(owner, name, None)
    if original is None:  # not (or no longer) there: nothing to time
        return

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter() - START
        try:
            return original(*args, **kwargs)
        finally:
            calls.append((label, start, time.perf_counter() - START))

    setattr(owner, name, wrapper)


def run_script(script: str) -> Any:
    profile_to = os.environ.pop("PROBE_PROFILE", "")
    if not profile_to:
        runpy.run_path(script, run_name="__main__")
        return None
    import cProfile
    import pstats
    import threading

    # One profiler per thread (cProfile sees only the thread that enabled it), merged at the end, so
    # that work done in download or upload threads is in the profile too.
    threads: list[cProfile.Profile] = []

    def in_thread(*_: Any) -> None:
        sys.setprofile(None)  # this thread's hook only: threads started later get one too
        thread_profiler = cProfile.Profile()
        threads.append(thread_profiler)
        thread_profiler.enable()

    threading.setprofile(in_thread)
    profiler = cProfile.Profile()
    try:
        profiler.runcall(runpy.run_path, script, run_name="__main__")
    finally:
        threading.setprofile(None)
        stats = pstats.Stats(profiler)
        for thread_profiler in threads:
            thread_profiler.create_stats()
            if thread_profiler.stats:  # type: ignore[attr-defined]
                stats.add(thread_profiler)
        stats.dump_stats(profile_to)
    return None


def main(argv: list[str]) -> int:
    report_path, script, *args = argv
    sys.path.insert(0, str(SCRIPTS))
    calls: list[tuple[str, float, float]] = []
    for module, owner, name, label in TIMED.get(Path(script).name, ()):
        timed(module, owner, name, calls, label)
    sys.argv = [script, *args]
    code: Any = 0
    try:
        run_script(script)
    except SystemExit as exc:
        code = exc.code
    phases: dict[str, float] = {}
    for label, begin, end in calls:
        phases[label] = phases.get(label, 0.0) + end - begin
    times = os.times()
    report = {
        "seconds": time.perf_counter() - START,
        "cpu": times.user + times.system,  # this process's CPU seconds (its threads included)
        "phases": phases,
        "calls": calls,
        "exit": code if isinstance(code, int) else (0 if code is None else 1),
        "peak_rss_kib": peak_rss_kib(),
    }
    Path(report_path).write_text(json.dumps(report))
    return int(report["exit"])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
