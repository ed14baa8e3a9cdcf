"""An image's pixel size from its header (PNG, JPEG, GIF, WebP, BMP), read straight from a base64 data URI
by decoding only the few bytes the header needs, and the input tokens a vision model spends on it.

The token rule is Qwen-VL's (the vision models Doubleword serves): one token per 32 x 32 pixels (16-pixel
patches merged 2 x 2), at least 64 and at most 16,384 tokens per image (the processor resizes outside
that range). An image whose size is unknown (an http(s) URL, which is not fetched, or a header that does not
parse) counts :data:`UNKNOWN_IMAGE_TOKENS`, a flat figure per image part. An estimate, not a bill:
other models tile images differently.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

PIXELS_PER_TOKEN_SIDE = 32
MIN_IMAGE_TOKENS = 64
MAX_IMAGE_TOKENS = 16_384
UNKNOWN_IMAGE_TOKENS = 256
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
_JPEG_MAX_SEGMENTS = 200

Read = Callable[[int, int], bytes]  # (offset, length) -> up to length bytes of the image


def tokens_for(size: tuple[int, int] | None) -> int:
    """Input tokens for an image of ``size`` (width, height) pixels; UNKNOWN_IMAGE_TOKENS for None."""
    if size is None:
        return UNKNOWN_IMAGE_TOKENS
    side = PIXELS_PER_TOKEN_SIDE
    width, height = size
    tokens = -(-width // side) * -(-height // side)
    return max(MIN_IMAGE_TOKENS, min(MAX_IMAGE_TOKENS, tokens))


def url_tokens(url: object) -> int:
    """Input tokens for an image URL: from the pixel size of a data URI's image, else the flat count."""
    if type(url) is not str or not url.startswith("data:"):
        return UNKNOWN_IMAGE_TOKENS
    comma = url.find(";base64,", 0, 80)
    return base64_tokens(url, comma + 8) if comma > 0 else UNKNOWN_IMAGE_TOKENS


def base64_tokens(text: str, start: int = 0) -> int:
    """Input tokens for the image whose base64 begins at ``text[start:]``."""
    return tokens_for(pixel_size(_base64_reader(text, start)))


def _base64_reader(text: str, start: int) -> Read:
    """Bytes of the base64 payload ``text[start:]`` by offset, decoding only the 4-character groups asked."""

    def read(offset: int, length: int) -> bytes:
        first, skip = divmod(offset, 3)
        chunk = text[start + first * 4 : start + (first + (skip + length + 2) // 3) * 4]
        try:
            return binascii.a2b_base64(chunk)[skip : skip + length]
        except (binascii.Error, ValueError):
            return b""

    return read


def pixel_size(read: Read) -> tuple[int, int] | None:
    """(width, height) from the image's header, or None when the format is not known or it does not parse."""
    head = read(0, 30)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return _checked(int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"))
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return _checked(int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little"))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp(head)
    if head.startswith(b"BM") and len(head) >= 26:
        width = int.from_bytes(head[18:22], "little", signed=True)
        return _checked(width, abs(int.from_bytes(head[22:26], "little", signed=True)))
    if head.startswith(b"\xff\xd8"):
        return _jpeg(read)
    return None


def _checked(width: int, height: int) -> tuple[int, int] | None:
    return (width, height) if width > 0 and height > 0 else None


def _webp(head: bytes) -> tuple[int, int] | None:
    kind = head[12:16]
    if kind == b"VP8 " and head[23:26] == b"\x9d\x01\x2a":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        return _checked(width, int.from_bytes(head[28:30], "little") & 0x3FFF)
    if kind == b"VP8L" and head[20:21] == b"\x2f":
        bits = int.from_bytes(head[21:25], "little")
        return _checked((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if kind == b"VP8X":
        width = int.from_bytes(head[24:27], "little") + 1
        return _checked(width, int.from_bytes(head[27:30], "little") + 1)
    return None


def _jpeg(read: Read) -> tuple[int, int] | None:
    """Walk the JPEG's segments (skipping each by its length, never decoding it) to the frame header."""
    offset = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        head = read(offset, 9)
        if len(head) < 4 or head[0] != 0xFF:
            return None
        marker = head[1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _JPEG_SOF:
            if len(head) < 9:
                return None
            return _checked(int.from_bytes(head[7:9], "big"), int.from_bytes(head[5:7], "big"))
        if 0xD0 <= marker <= 0xD9 or marker == 0x01:  # markers without a length
            offset += 2
            continue
        offset += 2 + int.from_bytes(head[2:4], "big")
    return None
