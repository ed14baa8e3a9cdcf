#!/usr/bin/env python3
"""Run every bench/bench_*.py module (each exposes ``run() -> list of row dicts``) and print a table.

Usage: python3 bench/run.py [NAME ...]   (e.g. `local` runs bench_local.py only). Exit 1 if a row misses
its target, so `make bench` can gate on it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
COLUMNS = ("benchmark", "baseline", "measured", "ratio", "target", "ok")


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(BENCH_DIR))
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    wanted = [f"bench_{n}" if not n.startswith("bench_") else n for n in argv]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    all_ok = True
    for name in wanted or names:
        print(f"== {name}", flush=True)
        rows = importlib.import_module(name).run()
        print_table(rows)
        all_ok &= all(row.get("ok", True) for row in rows)
    return 0 if all_ok else 1


def print_table(rows: list[dict[str, Any]]) -> None:
    cells = [[str(row.get(c, "")) for c in COLUMNS] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(COLUMNS)]
    print("  ".join(c.ljust(w) for c, w in zip(COLUMNS, widths, strict=True)))
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)), flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
