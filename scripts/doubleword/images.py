"""Images for vision and OCR requests: a local file becomes a ``data:<mime>;base64,...`` URI (read one at a
time, so memory holds one image), an ``http(s)`` URL is kept as it is; a folder of images is listed in name
order."""

from __future__ import annotations

import base64
import mimetypes
import os
from pathlib import Path

from doubleword.errors import InputError

# Magic numbers first (a .jpg that is really a PNG is sent as what it is), then the file name.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".avif"}
)
# Names whose format always starts with one of the signatures above: such a file that starts otherwise (an
# error page saved as .png, an empty or cut-off download) is not an image, whatever its name says.
_SIGNED_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"})


def image_mime(data: bytes, name: str) -> str | None:
    """The image MIME type of ``data`` (by its magic number, else by ``name``), or None if not an image."""
    for magic, mime in _SIGNATURES:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if Path(name).suffix.lower() in _SIGNED_SUFFIXES or not data:
        return None
    guessed = mimetypes.guess_type(name)[0]
    return guessed if guessed and guessed.startswith("image/") else None


def is_url(value: str) -> bool:
    return value.startswith(("https://", "http://"))


def image_url(value: str, base: Path, where: str) -> str:
    """The URL to send for one image cell: an http(s) URL as it is, else a local path (relative to ``base``,
    the data file's folder) read and encoded as a data URI. Errors name ``where`` and the path."""
    value = value.strip()
    if not value:
        raise InputError(f"{where}: the image column is empty; give a file path or an http(s) URL")
    if is_url(value):
        return value
    path = Path(os.path.expanduser(value))
    if not path.is_absolute():
        path = base / path
    return data_uri(path, where)


def data_uri(path: Path, where: str) -> str:
    """``data:<mime>;base64,<data>`` for an image file; an InputError naming ``where`` and the path."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{where}: image {path} does not exist")
    except OSError as exc:
        raise InputError(f"{where}: image {path} cannot be read ({exc.strerror or exc})")
    mime = image_mime(data, path.name)
    if mime is None:
        what = "is empty" if not data else f"does not start as an image file does (first bytes {data[:8]!r})"
        raise InputError(
            f"{where}: {path} is not an image: it {what}; give PNG, JPEG, GIF, WebP, BMP, TIFF, HEIC or AVIF"
        )
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def image_files(folder: str) -> list[Path]:
    """The image files of a folder (by suffix, not recursive), in name order."""
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"--images {folder}: not a folder")
    found = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"--images {folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return found
