"""--max-cost refusals: the server's estimate shown beside the local count of input tokens (the server counts
4 body bytes as a token, so for base64 images its figure is far above what the model counts), in the message
and the JSON; and the same guard on --resubmit, which refuses as round 1 does (it crashed with exit 1)."""

from __future__ import annotations

import random
import struct
import zlib
from decimal import Decimal

import requests

VISION_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"


def noisy_png(width: int, height: int, seed: int) -> bytes:
    """A real grey PNG of random pixels (incompressible, as a scan or photo nearly is): ~width x height bytes."""
    noise = random.Random(seed)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    rows = b"".join(b"\x00" + noise.randbytes(width) for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_an_image_batch_refused_by_max_cost_shows_the_local_estimate_beside_the_servers(
    emulator, env, tmp_path, h
):
    pages = tmp_path / "pages"
    pages.mkdir()
    for i in range(3):
        (pages / f"page-{i}.png").write_bytes(noisy_png(512, 512, seed=i))  # ~260 KB each
    out = tmp_path / "ocr.jsonl"
    code, doc, err = h.run_script(
        "create_batch_file", "--images", str(pages), "--prompt", "Transcribe this page.",
        "--model", VISION_MODEL, "--max-tokens", "500", "-o", str(out), env=env,
    )  # fmt: skip
    assert code == 0, doc
    code, plan, err = h.run_script("submit", str(out), "--dry-run", env=env)
    local = plan["estimated_input_tokens"]
    assert code == 0 and 3 * 256 <= local < 3 * 300, plan  # 512 x 512 pixels: 256 tokens per image

    code, doc, err = h.run_script("submit", str(out), "--max-cost", "0.001", env=env)
    assert code == 4 and doc["error"]["type"] == "cost_limit", (code, doc, err)
    assert emulator.stats()["batches_created"] == 0
    estimate = requests.get(
        f"{emulator.base_url}/files/{doc['batches'][0]['input_file_id']}/cost-estimate",
        headers=emulator.headers,
        params={"completion_window": "24h"},
        timeout=10,
    ).json()  # what the server said
    server = estimate["total_estimated_input_tokens"]
    assert doc["estimated_input_tokens"] == {"server": server, "local": local}, doc
    assert Decimal(doc["estimated_cost_usd"]) == Decimal(estimate["total_estimated_cost"]) > Decimal("0.001")
    assert server > 100 * local  # base64 bytes / 4 against pixels
    message = doc["error"]["message"]
    assert f"${doc['estimated_cost_usd']} (for {server:,} input tokens)" in message, message
    assert f"local estimate counts {local:,} input tokens" in message and "x fewer" in message, message
    assert f"{local:,} input tokens" in err and "--max-cost" in err

    code, doc, err = h.run_script("submit", str(out), env=env)  # the user accepts: nothing uploaded again
    assert code == 0 and doc["created"] == 1 and emulator.stats()["files_created"] == 1, (code, doc, err)


def test_resubmit_with_max_cost_refuses_like_round_one_and_the_same_round_goes_ahead_later(tmp_path, h):
    with h.start_emulator("--fail-rate", "0.5", "--seed", "3") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, h.chat_lines(6), env)
        h.poll_wait("--manifest", job.manifest, env=env, code=6)
        resubmit = ("submit", "--resubmit", "--manifest", job.manifest)

        code, doc, err = h.run_script(*resubmit, "--max-cost", "0", env=env)
        assert code == 4 and doc["ok"] is False and doc["error"]["type"] == "cost_limit", (code, doc, err)
        assert "Traceback" not in err and "internal" not in err
        tokens = doc["estimated_input_tokens"]
        assert doc["round"] == 2 and 0 < tokens["local"] < tokens["server"], doc
        assert doc["unanswered"] == doc["batches"][0]["requests"] > 0, doc
        assert emu.stats()["files_created"] == 2 and emu.stats()["batches_created"] == 1

        code, doc, err = h.run_script(*resubmit, env=env)  # the round refused above, now sent as planned
        assert code == 0 and doc["round"] == 2 and doc["created"] == 1, (code, doc, err)
        assert emu.stats()["files_created"] == 2 and emu.stats()["batches_created"] == 2
