"""The input-token estimate counts images by their pixel size, read from the header of each data URI's
image (PNG, JPEG, GIF, WebP, BMP): one token per 32 x 32 pixels, 64 to 16,384 per image; an image URL or
a header that does not parse counts the emulator's flat 256. Checked through validate_batch_file.py and
submit.py --dry-run, and against what the emulator reports as prompt tokens for the same request."""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

from emulator_server import EmulatorServer

VISION_MODEL = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"
TEXT = "Read this page."


def png(width: int, height: int, *, pixels: bool = False) -> bytes:
    """A PNG of that size (grey; with ``pixels`` a real, decodable image, else the header alone)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
    rows = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height))) if pixels else b""
    return b"\x89PNG\r\n\x1a\n" + header + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def jpeg(width: int, height: int) -> bytes:
    """A JPEG's segments up to its frame header, behind a 3,000-byte APP1 segment (as EXIF data is)."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    app1 = b"\xff\xe1" + struct.pack(">H", 3004) + b"Exif\x00\x00" + b"\x11" * 2996
    sof = (
        b"\xff\xc2" + struct.pack(">HBHHB", 17, 8, height, width, 3) + b"\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    )
    return b"\xff\xd8" + app0 + app1 + b"\xff\xff" + sof + b"\xff\xd9"


def gif(width: int, height: int) -> bytes:
    return b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00;"


def webp(kind: str, width: int, height: int) -> bytes:
    if kind == "VP8X":
        body = b"\x00\x00\x00\x00" + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    elif kind == "VP8L":
        body = b"\x2f" + ((width - 1) | (height - 1) << 14).to_bytes(4, "little") + b"\x00"
    else:
        body = b"\x00\x00\x00\x9d\x01\x2a" + struct.pack("<HH", width, height)
    chunk = kind.encode().ljust(4) + struct.pack("<I", len(body)) + body
    return b"RIFF" + struct.pack("<I", 4 + len(chunk)) + b"WEBP" + chunk


def bmp(width: int, height: int) -> bytes:
    return b"BM" + b"\x00" * 12 + struct.pack("<Iii", 40, width, -height) + b"\x00" * 28


def data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


# (image URL, the tokens it is estimated at)
IMAGES = [
    (data_uri("image/png", png(512, 512)), 256),  # 16 x 16 tiles
    (data_uri("image/jpeg", jpeg(1700, 2200)), 54 * 69),  # a scanned page
    (data_uri("image/gif", gif(100, 50)), 64),  # 4 x 2 tiles: the minimum
    (data_uri("image/webp", webp("VP8X", 4000, 4000)), 125 * 125),
    (data_uri("image/webp", webp("VP8L", 33, 33)), 64),
    (data_uri("image/webp", webp("VP8", 640, 480)), 20 * 15),
    (data_uri("image/bmp", bmp(320, 320)), 100),
    (data_uri("image/png", png(10_000, 10_000)), 16_384),  # the maximum
    ("https://example.com/page.png", 256),  # not fetched: the flat count
    (data_uri("image/png", b"not really a png"), 256),  # no readable header: the flat count
]


def request(i: int, url: str, shape: str = "chat") -> dict:
    if shape == "responses":
        content = [{"type": "input_text", "text": TEXT}, {"type": "input_image", "image_url": url}]
        body = {"model": VISION_MODEL, "input": [{"role": "user", "content": content}]}
        return {"custom_id": f"img-{i}", "method": "POST", "url": "/v1/responses", "body": body}
    parts = [{"type": "text", "text": TEXT}, {"type": "image_url", "image_url": {"url": url}}]
    body = {"model": VISION_MODEL, "messages": [{"role": "user", "content": parts}], "max_tokens": 16}
    return {"custom_id": f"img-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}


def test_validation_counts_each_image_by_its_pixel_size(tmp_path, h):
    expected = (len(TEXT) * len(IMAGES) + 4 * sum(t for _, t in IMAGES) + 3) // 4
    env = h.script_env(None, TMPDIR=str(tmp_path))
    for shape in ("chat", "responses"):
        src = h.write_jsonl(
            tmp_path / f"{shape}.jsonl", [request(i, u, shape) for i, (u, _) in enumerate(IMAGES)]
        )
        code, doc, err = h.run_script("validate_batch_file", str(src), env=env)
        assert code == 0, doc
        assert doc["files"][0]["stats"]["estimated_input_tokens"] == expected, (
            shape,
            doc["files"][0]["stats"],
        )
    # a line off the fast path (an unusual field) is counted the same way
    odd = [request(i, u) for i, (u, _) in enumerate(IMAGES)]
    for line in odd:
        line["body"]["messages"][0]["name"] = 7  # not a string: the detailed checks (and an error)
    code, doc, err = h.run_script(
        "validate_batch_file", str(h.write_jsonl(tmp_path / "odd.jsonl", odd)), env=env
    )
    assert code == 4 and doc["files"][0]["stats"]["estimated_input_tokens"] == expected, doc["files"][0]


def test_the_dry_run_estimate_and_the_emulator_agree_on_an_image_request(tmp_path, h):
    pages = tmp_path / "pages"
    pages.mkdir()
    (pages / "page-1.png").write_bytes(png(512, 512, pixels=True))
    out = tmp_path / "ocr.jsonl"
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url, TMPDIR=str(tmp_path))
        code, doc, err = h.run_script(
            "create_batch_file", "--images", str(pages), "--prompt", TEXT, "--model", VISION_MODEL,
            "-o", str(out), env=env,
        )  # fmt: skip
        assert code == 0, doc
        code, plan, err = h.run_script("submit", str(out), "--dry-run", env=env)
        assert code == 0 and plan["dry_run"], plan
        estimate = plan["estimated_input_tokens"]
        assert estimate == 256 + (len(TEXT) + 3) // 4, plan  # was the text alone: 4
        code, sub, err = h.run_script("submit", str(out), env=env)
        assert code == 0, sub
        manifest = sub["manifest"]
        assert h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env).code == 0
        code, fetched, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
        assert code == 0, fetched
        record = json.loads(Path(fetched["files"]["results"]).read_text().splitlines()[0])
        served = record["usage"]["prompt_tokens"]
        assert abs(estimate - served) <= 0.1 * served, (estimate, served)
