"""cli.one_heap: a fetch's threads allocate from one C heap (glibc), so that each thread does not keep
an arena of its own (and what it freed). Seen from outside: a thread's arena is a reserved mapping of
its own (64 MB, mostly not yet usable) in /proc/self/maps."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROGRAM = """
import sys, threading
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "one":
    from doubleword.cli import one_heap
    one_heap()
held, ready, done = [], threading.Barrier(4), threading.Event()
def work():
    held.append([bytes(3000) for _ in range(300)])  # past the small-object allocator: the C heap
    ready.wait()
    done.wait()
threads = [threading.Thread(target=work) for _ in range(3)]
for thread in threads:
    thread.start()
ready.wait()
reserved = 0
for line in open("/proc/self/maps"):
    parts = line.split()
    low, high = (int(x, 16) for x in parts[0].split("-"))
    reserved += parts[1] == "---p" and len(parts) == 5 and high - low >= 1 << 20
print(reserved)
done.set()
"""


def _is_glibc() -> bool:
    try:
        return bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


def _arenas(h, mode: str, **env: str) -> int:
    environment = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"} | env
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM, str(h.SCRIPTS), mode], env=environment, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    return int(proc.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _is_glibc(), reason="glibc's arenas")
def test_threads_share_one_heap_unless_the_user_chose(h):
    assert _arenas(h, "default") >= 1  # each allocating thread reserved an arena of its own
    assert _arenas(h, "one") == 0
    assert _arenas(h, "one", MALLOC_ARENA_MAX="4") >= 1  # the user's setting is left alone
