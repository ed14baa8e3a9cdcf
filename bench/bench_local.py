"""Local benchmarks: validation vs a bare json.loads loop, building vs a bare json.dumps loop, and the
peak memory of validation at two file sizes (it must not grow with the file).

Targets: validation <= 1.5x json.loads, build <= 1.5x json.dumps (both with orjson when installed; the
standard library alone shown too), validation memory flat; an image batch
(2,000 x 200 KB) validates at >= 0.8x the text batch's bytes per second (its build and validate time and
memory are shown). Create's peak memory at 200,000 vs 20,000 requests is bench_scale's growth target.
Commands run through harness.probe (their own process; peak memory = its VmHWM).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
sys.path.insert(0, str(SCRIPTS))

from harness import paired, probe, ratio_row, timed  # noqa: E402

from doubleword import build as batch_file  # noqa: E402
from doubleword import fastjson  # noqa: E402
from doubleword import validation as batch_validation  # noqa: E402

LINES = 50_000
REPEAT = 5
MODEL = "Qwen/Qwen3.5-9B"
WORDS_TEXT = (
    "the of and to in is that for it as was with be by on not he this are or his from at which but have an "
    "they you were her she there been one all we their has would when if so no what about can out other "
    'résumé naïve café 東京 données "quoted" it\'s tab\there'
)
WORDS = WORDS_TEXT.split(" ")


def prompt(rng: random.Random, words: int) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(words))
    return text.replace(" so ", " so\n", 1)


def make_prompts(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [
        f"Summarise the following support ticket #{i} in two sentences:\n" + prompt(rng, 170)
        for i in range(count)
    ]


def request(i: int, text: str) -> dict[str, Any]:
    return {
        "custom_id": f"req-{i:05d}",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a concise assistant for a customer-support team."},
                {"role": "user", "content": text},
            ],
            "max_tokens": 256,
            "temperature": 0.2,
        },
    }


def write_file(path: Path, count: int) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for i, text in enumerate(make_prompts(count)):
            handle.write(json.dumps(request(i, text), ensure_ascii=False) + "\n")


def command_peak(tmpdir: Path, script: str, *args: str) -> tuple[float, int]:
    """(seconds, peak RSS KiB) of one command in its own process (harness.probe); it must exit 0."""
    run = probe(None, tmpdir, script, *args)
    assert run["stdout"].get("ok"), run["stdout"]
    return run["wall"], int(run["peak_rss_kib"])


def image_rows(tmpdir: Path, text_file: Path) -> list[dict[str, Any]]:
    """Build and validate 2,000 requests with a 200 KB image each (issue 13's closing figure), and the
    validation rate of that image batch against the text batch's (target: similar, >= 0.8x)."""
    folder = tmpdir / "pages"
    folder.mkdir()
    rng = random.Random(5)
    for i in range(2000):
        (folder / f"page-{i:04d}.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.randbytes(200 * 1024 - 8))
    out = tmpdir / "images.jsonl"
    build_s, build_kib = command_peak(tmpdir, "create_batch_file.py", "--model", "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8",
                                      "--images", str(folder), "--prompt", "Transcribe this page.",
                                      "-o", str(out))  # fmt: skip
    shards = sorted(str(p) for p in tmpdir.glob("images*.jsonl") if not p.name.endswith(".rows.jsonl"))
    image_bytes = sum(Path(p).stat().st_size for p in shards)
    check_s, check_kib = command_peak(tmpdir, "validate_batch_file.py", "--quiet", *shards)
    text_s, _ = command_peak(tmpdir, "validate_batch_file.py", "--quiet", str(text_file))
    image_rate, text_rate = image_bytes / check_s, text_file.stat().st_size / text_s
    for path in [*folder.iterdir(), *tmpdir.glob("images*")]:
        path.unlink()
    info = {"target": "(info)", "ok": True, "ratio": ""}
    return [
        {
            "benchmark": f"build 2,000 x 200 KB images ({image_bytes / 1e6:.0f} MB)",
            "baseline": "",
            "measured": f"{build_s:.2f}s, peak {build_kib / 1024:.1f} MiB",
            **info,
        },  # fmt: skip
        {
            "benchmark": "validate that image batch",
            "baseline": "",
            "measured": f"{check_s:.2f}s, peak {check_kib / 1024:.1f} MiB",
            **info,
        },  # fmt: skip
        {
            "benchmark": "validate MB/s: image batch vs text batch",
            "baseline": f"text {text_rate / 1e6:.0f} MB/s",
            "measured": f"images {image_rate / 1e6:.0f} MB/s",
            "ratio": round(image_rate / text_rate, 2),
            "target": ">= 0.8x",
            "ok": image_rate >= 0.8 * text_rate,
        },
    ]


def traced_peak_kib(path: Path) -> int:
    import tracemalloc

    tracemalloc.start()
    batch_validation.validate_batch_file(str(path))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak // 1024


def run() -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dw-bench-") as tmp:
        tmpdir = Path(tmp)
        big = tmpdir / "batch.jsonl"
        write_file(big, LINES)
        size_mb = big.stat().st_size / 1e6

        def loads_loop() -> None:
            with open(big, encoding="utf-8") as handle:
                for line in handle:
                    json.loads(line)

        def validate() -> None:
            report = batch_validation.validate_batch_file(str(big))
            assert report["valid"], report["errors"]

        def validate_pure() -> None:
            fast, fastjson.loads = fastjson.loads, None  # the path without orjson installed
            try:
                validate()
            finally:
                fastjson.loads = fast

        validate()  # warm the schema caches once, as a long-lived process would be
        base, ours, ours_pure = paired(
            timed(loads_loop), timed(validate), timed(validate_pure), repeat=REPEAT
        )
        accelerated = " (orjson)" if fastjson.loads is not None else ""
        label = f"validate {LINES:,} lines / {size_mb:.0f} MB"
        rows.append(ratio_row(label + accelerated, "json.loads loop", base, ours, 1.5))
        row = ratio_row(label + ", standard library only", "json.loads loop", base, ours_pure, 1.5)
        row.update(target="(info)", ok=True)
        rows.append(row)

        prompts = make_prompts(LINES)
        requests = [request(i, text) for i, text in enumerate(prompts)]
        out = tmpdir / "out.jsonl"

        def dumps_loop() -> None:
            with open(out, "w", encoding="utf-8") as handle:
                for item in requests:
                    handle.write(json.dumps(item) + "\n")

        def write_prebuilt() -> None:
            batch_file.write_batch(requests, out)

        def build_from_prompts() -> None:
            options = {
                "max_tokens": 256,
                "temperature": 0.2,
                "system": requests[0]["body"]["messages"][0]["content"],
            }
            batch_file.write_batch(
                (
                    batch_file.make_request(text, model=MODEL, custom_id=f"req-{i:05d}", **options)
                    for i, text in enumerate(prompts)
                ),
                out,
            )

        def dumps_same_format() -> None:
            # The same output as write_batch: compact, UTF-8 kept (CPython's encoder is ~1.5x slower with
            # ensure_ascii=False when the text is not ASCII, so both baselines are shown).
            with open(out, "w", encoding="utf-8") as handle:
                for item in requests:
                    handle.write(json.dumps(item, separators=(",", ":"), ensure_ascii=False) + "\n")

        def pure(fn: Any) -> Any:
            """``fn`` on the standard library's encoder alone (the path without orjson installed)."""

            def run_pure() -> None:
                fast, fastjson.dumps = fastjson.dumps, None
                try:
                    fn()
                finally:
                    fastjson.dumps = fast

            return run_pure

        measured = (dumps_loop, dumps_same_format, write_prebuilt, build_from_prompts)
        base, same, wrote, built, built_pure = paired(
            *map(timed, (*measured, pure(build_from_prompts))), repeat=REPEAT
        )
        # The target compares the same bytes (compact, UTF-8 kept), with orjson when it is installed (the
        # encoder of doubleword.fastjson); json.dumps' defaults write other bytes (spaces, \u escapes),
        # and the standard library alone is what a skill without orjson runs: both shown for information.
        accelerated = " (orjson)" if fastjson.dumps is not None else ""
        rows.append(
            ratio_row(f"make_request + write_batch{accelerated}", "same-format dumps loop", same, built, 1.5)
        )
        rows.append(
            ratio_row(
                f"write_batch (validated, atomic){accelerated}", "same-format dumps loop", same, wrote, 1.5
            )
        )
        for label, baseline, base_time, ours in (
            ("make_request + write_batch, standard library only", "same-format dumps loop", same, built_pure),
            ("make_request + write_batch", "default json.dumps loop", base, built),
            ("write_batch (validated, atomic)", "default json.dumps loop", base, wrote),
        ):
            row = ratio_row(label, baseline, base_time, ours, 1.5)
            row.update(target="(info)", ok=True)
            rows.append(row)

        small = tmpdir / "small.jsonl"
        write_file(small, LINES // 5)
        rss_small = command_peak(tmpdir, "validate_batch_file.py", "--quiet", str(small))[1]
        rss_big = command_peak(tmpdir, "validate_batch_file.py", "--quiet", str(big))[1]
        rows.append(_memory_row(f"peak RSS {LINES // 5:,} vs {LINES:,} lines", rss_small, rss_big))
        traced_small, traced_big = traced_peak_kib(small), traced_peak_kib(big)
        rows.append(_memory_row("peak Python heap (tracemalloc)", traced_small, traced_big))
        rows += image_rows(tmpdir, big)
    return rows


def _memory_row(name: str, small_kib: int, big_kib: int) -> dict[str, Any]:
    # "Flat": the 5x larger file may cost only the custom_id index (about 100 bytes per request).
    return {
        "benchmark": name,
        "baseline": f"{small_kib / 1024:.1f} MiB",
        "measured": f"{big_kib / 1024:.1f} MiB",
        "ratio": round(big_kib / max(small_kib, 1), 2),
        "target": "flat (file 5x larger)",
        "ok": big_kib - small_kib < 16 * 1024,
    }
