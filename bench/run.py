#!/usr/bin/env python3
"""Run every bench/bench_*.py module (each exposes ``run() -> list of row dicts``) and print its tables.

Usage: python3 bench/run.py [--quick] [--json FILE] [--markdown FILE] [NAME ...]   (e.g. `local` runs
bench_local.py only). --quick (or BENCH_QUICK=1 in the environment, e.g. `BENCH_QUICK=1 make bench`) leaves
out the slow rows: the 1,000,000-request row of the growth table and its memory targets. --json FILE also writes every row, with the
run's date, machine, duration and load average, to FILE; --markdown FILE the same as Markdown tables
(what the README's performance section quotes). Exit 1 if a row misses its target (``"ok": false``), so `make bench` can gate on it.

Rows with the same keys, one after the other, print as one table: the target rows have the columns
benchmark, baseline, measured, ratio, target, ok; other tables (the growth table) bring their own.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="leave out the 1,000,000-request growth row")
    parser.add_argument("--json", metavar="FILE", help="also write every row to FILE")
    parser.add_argument("--markdown", metavar="FILE", help="also write the tables to FILE as Markdown")
    args = parser.parse_args(argv)
    if args.quick:
        os.environ["BENCH_QUICK"] = "1"
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    names = sorted(p.stem for p in BENCH_DIR.glob("bench_*.py"))
    wanted = [n if n.startswith("bench_") else f"bench_{n}" for n in args.names]
    unknown = [n for n in wanted if n not in names]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(names)}", file=sys.stderr)
        return 2
    started = time.time()
    report: dict[str, Any] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started))}
    report.update(machine=f"{platform.node()} {os.cpu_count()} cores, Python {platform.python_version()}")
    report["load_before"] = [round(x, 2) for x in os.getloadavg()]  # how busy the machine was: the noise
    all_ok = True
    for name in wanted or names:
        print(f"== {name}", flush=True)
        begin = time.perf_counter()
        rows = importlib.import_module(name).run()
        print_tables(rows)
        print(f"({name}: {time.perf_counter() - begin:.0f}s)", flush=True)
        report[name] = {"seconds": round(time.perf_counter() - begin, 1), "rows": rows}
        all_ok &= all(row.get("ok", True) for row in rows)
    report["seconds"] = round(time.time() - started, 1)
    report["load_after"] = [round(x, 2) for x in os.getloadavg()]
    report["ok"] = all_ok
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown(report, wanted or names))
    missed = [r for n in (wanted or names) for r in report[n]["rows"] if not r.get("ok", True)]
    print(
        f"== {report['seconds']:.0f}s; "
        + (f"{len(missed)} target(s) missed" if missed else "every target met")
    )
    return 0 if all_ok else 1


TARGET_COLUMNS = ("benchmark", "baseline", "measured", "ratio", "target", "ok")


def tables(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Runs of rows with the same keys; target rows with their columns in the usual order."""
    groups: list[list[dict[str, Any]]] = []
    for row in rows:
        if set(row) == set(TARGET_COLUMNS):
            row = {c: row[c] for c in TARGET_COLUMNS}
        if groups and set(row) == set(groups[-1][0]):
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def print_tables(rows: list[dict[str, Any]]) -> None:
    for group in tables(rows):
        print_table(group)


def markdown(report: dict[str, Any], names: list[str]) -> str:
    load = f"load average {report['load_before'][0]:g} -> {report['load_after'][0]:g}"
    lines = [f"Run {report['started']}, {report['machine']}, {report['seconds']:.0f} s, {load}.", ""]
    for name in names:
        lines.append(f"{name} ({report[name]['seconds']:.0f} s):")
        for group in tables(report[name]["rows"]):
            lines += ["", "| " + " | ".join(group[0]) + " |", "|" + " --- |" * len(group[0])]
            lines += [
                "| " + " | ".join(_cell(v).replace("|", "/") for v in row.values()) + " |" for row in group
            ]
        lines.append("")
    return "\n".join(lines)


def print_table(rows: list[dict[str, Any]]) -> None:
    columns = list(rows[0])
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip(), flush=True)


def _cell(value: Any) -> str:
    if value is True:
        return "ok"
    if value is False:
        return "MISSED"
    return str(value)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
