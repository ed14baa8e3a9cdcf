"""Configuration: where the API is, the key, the documented limits and batch statuses, and redaction."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
from pathlib import Path
from urllib.parse import urlsplit

from doubleword.errors import ConfigError

SKILL_DIR = Path(__file__).resolve().parent.parent.parent
SCHEMA_DIR = SKILL_DIR / "references" / "schemas"
SKILL_FILE = SKILL_DIR / "SKILL.md"

API_KEY_ENV = "DOUBLEWORD_API_KEY"
BASE_URL_ENV = "DOUBLEWORD_BASE_URL"
DEFAULT_BASE_URL = "https://api.doubleword.ai/v1"

# Documented Doubleword limits, enforced on the client side (references/api_reference.md section 10).
MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_REQUESTS_PER_FILE = 50_000
MAX_CUSTOM_ID_BYTES = 64
COMPLETION_WINDOWS = ("24h", "1h")
BATCH_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/messages",
)
# "deleted" is ours, not the server's: a batch that 404s while its recorded output files remain.
DELETED = "deleted"
TERMINAL_STATUSES = frozenset({"completed", "failed", "cancelled", "expired", DELETED})
UNSUCCESSFUL_STATUSES = frozenset({"failed", "cancelled", "expired", DELETED})


@functools.cache
def skill_version() -> str:
    """The skill's version: ``metadata.version`` in SKILL.md's frontmatter (the one place it is set)."""
    try:
        lines = SKILL_FILE.read_text(encoding="utf-8").splitlines()
    except OSError:
        return "unknown"
    in_metadata, indent = False, None
    for line in lines[1:]:
        if line.strip() == "---":
            break
        if not line.startswith((" ", "\t")):
            in_metadata = line.rstrip() == "metadata:"
            continue
        if in_metadata and line.strip():
            depth = len(line) - len(line.lstrip())
            indent = depth if indent is None else indent
            key, _, value = line.strip().partition(":")
            if depth == indent and key == "version":
                return value.split("#", 1)[0].strip().strip("\"'") or "unknown"
    return "unknown"


_SECRETS: set[str] = set()


def register_secret(value: str | None) -> None:
    """Remember a secret so that :func:`redact` removes it from anything we print or write."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


def redact(text: str) -> str:
    """Replace every registered secret in ``text`` with ``<hidden>``."""
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "<hidden>")
    return text


def base_url_from(args: argparse.Namespace) -> str:
    """The API base URL from ``--base-url``, the environment or the default, checked for safety."""
    url = (getattr(args, "base_url", None) or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).strip()
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError as exc:
        raise ConfigError(f"base URL {url!r} is not a valid URL ({exc}); set {BASE_URL_ENV} or --base-url")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"base URL {url!r} is not an http(s) URL; set {BASE_URL_ENV} or --base-url")
    if parts.scheme == "http" and not _is_loopback(parts.hostname) and not args.allow_insecure:
        raise ConfigError(
            f"refusing to send the API key over plain http to {parts.hostname}; use https, "
            "or pass --allow-insecure if you really mean it"
        )
    return url.rstrip("/")


def api_key_from_env() -> str:
    """The API key from the environment; a clear configuration error if it is missing."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    if not key:
        base = os.environ.get(BASE_URL_ENV, "")
        if base and _is_loopback(urlsplit(base).hostname or ""):  # a server on this machine
            raise ConfigError(
                f"{API_KEY_ENV} is not set. The local server at {base} needs no Doubleword account: it "
                f"accepts any key unless it was started with --api-key. Run: export {API_KEY_ENV}=sk-local"
            )
        raise ConfigError(
            f"{API_KEY_ENV} is not set. Create a key at https://app.doubleword.ai and run: "
            f"export {API_KEY_ENV}=sk-..."
        )
    register_secret(key)
    return key


def _is_loopback(host: str) -> bool:
    """Only ``localhost`` and loopback IP literals (``127.evil.example`` is a name, not a loopback)."""
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
