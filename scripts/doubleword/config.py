"""Configuration: where the API is, the key, the documented limits and batch statuses, and redaction."""

from __future__ import annotations

import argparse
import functools
import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from doubleword.errors import ConfigError
from doubleword.redaction import redact, register_secret

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


USER_AGENT = f"doubleword-batches/{skill_version()} (+python-requests)"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0  # the longest silence on one read: well under a minute


def raw_base_url(args: argparse.Namespace) -> str:
    """``--base-url``, else the environment's, else the default: as given, before any check."""
    return getattr(args, "base_url", None) or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL


def base_url_from(args: argparse.Namespace) -> str:
    """The API base URL from ``--base-url``, the environment or the default, checked for safety.

    The URL is read by the parser the HTTP library connects with; anything it and the standard library
    could read differently is refused. The whole route is checked: with a proxy from the environment (as
    requests applies HTTP_PROXY, HTTPS_PROXY, ALL_PROXY and NO_PROXY), the proxy is the host connected to."""
    key = register_env_key()  # hidden in every refusal below, too
    raw = raw_base_url(args)
    if len(key) >= 8 and key in raw:  # (a short test key could be part of any URL)
        raise ConfigError(
            f"the base URL holds the API key ({API_KEY_ENV}'s value), never sent or shown that way; set "
            f"{BASE_URL_ENV} or --base-url to the server's URL, e.g. {DEFAULT_BASE_URL}"
        )
    url = canonical_url(raw.strip(), "base URL")
    check_route(url, allow_insecure=bool(getattr(args, "allow_insecure", False)))
    return url


def canonical_url(url: str, what: str) -> str:
    """``scheme://host[:port]/path`` as the HTTP library will connect, or a :class:`ConfigError`."""
    where = f"set {BASE_URL_ENV} or --base-url" if what == "base URL" else "fix it"
    try:
        parts = _parse(url)
    except ValueError as exc:
        raise ConfigError(f"{what} {_show(url)} cannot be used: {exc}; {where}")
    scheme, host, port, path = parts
    return f"{scheme}://{host}{f':{port}' if port is not None else ''}{path.rstrip('/')}"


def _parse(url: str) -> tuple[str, str, int | None, str]:
    from urllib3.util import parse_url  # the parser requests connects with

    if any(ord(c) < 0x21 or ord(c) > 0x7E for c in url):
        raise ValueError("it holds spaces, control or non-ASCII characters")
    if "\\" in url:
        raise ValueError("it holds a backslash, which HTTP libraries read in different ways")
    parsed = parse_url(url)
    split = urlsplit(url)
    scheme = (parsed.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise ValueError("it is not an http:// or https:// URL")
    if parsed.auth is not None or "@" in split.netloc:
        raise ValueError("it holds a user name or password (user@host); give the key in DOUBLEWORD_API_KEY")
    if parsed.query is not None or parsed.fragment is not None or split.query or split.fragment:
        raise ValueError("it holds a query (?...) or fragment (#...)")
    host = (parsed.host or "").lower()
    if not host or "%" in host:
        raise ValueError("it has no host name, or an encoded one")
    try:
        split_port = split.port
    except ValueError as exc:
        raise ValueError(f"its port is not valid ({exc})")
    if (split.hostname or "") != host.strip("[]") or split_port != parsed.port:
        raise ValueError("its host or port can be read in more than one way")
    return scheme, host, parsed.port, parsed.path or ""


def check_route(url: str, *, allow_insecure: bool) -> None:
    """Refuse to send the key over plain http beyond this machine: to the host or through a proxy.

    Any proxy counts, HTTP or SOCKS: over plain http both see the key. A SOCKS proxy also needs PySocks
    (``requests[socks]``); without it the route is refused here, naming the variable that set it."""
    scheme, host, _, _ = _parse(url)
    if scheme == "http" and not allow_insecure and not is_loopback(host):
        raise ConfigError(
            f"refusing to send the API key over plain http to {host}; use https, "
            "or pass --allow-insecure if you really mean it"
        )
    proxy = proxy_for(url)
    if proxy is None:
        return
    _register_proxy_credentials(proxy)
    try:
        proxy_scheme, proxy_host, _, _ = _parse_proxy(proxy)
    except ValueError as exc:
        raise ConfigError(f"the proxy {_show(proxy)} set in the environment cannot be used: {exc}")
    source = _proxy_source(proxy)
    if proxy_scheme.startswith("socks") and not _have_pysocks():
        raise ConfigError(
            f"the proxy {_show(proxy)} (from {source}) is a SOCKS proxy, which needs the PySocks package: "
            f"pip install 'requests[socks]'; or unset {source}, add {host} to NO_PROXY, or use an HTTP "
            "proxy (HTTPS_PROXY=http://HOST:PORT)"
        )
    if scheme == "https" or allow_insecure:
        return  # https: the key travels inside TLS, through a CONNECT tunnel or a SOCKS one too
    if not is_loopback(proxy_host):
        raise ConfigError(
            f"refusing to send the API key over plain http through the proxy {proxy_host} (from {source}); "
            f"add {host} to NO_PROXY, unset the proxy, use https, or pass --allow-insecure"
        )


def _register_proxy_credentials(proxy: str) -> None:
    """A proxy's password (and the Basic header made of it) is a secret like the key: never shown."""
    import base64
    from urllib.parse import unquote

    userinfo = urlsplit(proxy if "://" in proxy else "http://" + proxy).netloc.rpartition("@")[0]
    if not userinfo:
        return
    user, _, password = userinfo.partition(":")
    for text in (password, unquote(password), userinfo, f"{unquote(user)}:{unquote(password)}"):
        register_secret(text)
        register_secret(base64.b64encode(text.encode()).decode())


def _proxy_source(proxy: str) -> str:
    """The environment variable(s) a proxy setting came from, for messages."""
    names = sorted(
        name
        for name, value in os.environ.items()
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy") and value.strip() == proxy.strip()
    )
    return " or ".join(names) or "HTTP_PROXY, HTTPS_PROXY or ALL_PROXY"


def _have_pysocks() -> bool:
    import importlib.util

    return importlib.util.find_spec("socks") is not None


def proxy_for(url: str) -> str | None:
    """The proxy requests would use for ``url`` from the environment (NO_PROXY honoured), or None."""
    from requests.utils import get_environ_proxies, select_proxy

    proxies = get_environ_proxies(url)
    return select_proxy(url, proxies) if proxies else None


def _parse_proxy(proxy: str) -> tuple[str, str, int | None, str]:
    from urllib3.util import parse_url

    if "://" not in proxy:
        proxy = "http://" + proxy  # as requests reads a bare host:port
    if "\\" in proxy or any(ord(c) < 0x21 or ord(c) > 0x7E for c in proxy):
        raise ValueError("it holds a backslash, spaces or non-ASCII characters")
    parsed = parse_url(proxy)
    split = urlsplit(proxy)
    host = (parsed.host or "").lower()
    if not host or (split.hostname or "") != host.strip("[]"):
        raise ValueError("its host can be read in more than one way")
    return (parsed.scheme or "http").lower(), host, parsed.port, parsed.path or ""


def _show(url: str) -> str:
    """A URL for a message: user info (which could hold a secret) and odd characters masked."""
    text = redact(url)
    text = re.sub(r"(?<=://)[^/@]*@", "***@", text)
    return ascii(text)


def register_env_key() -> str:
    """The key in the environment (stripped), registered as a secret before any message can show it."""
    key = os.environ.get(API_KEY_ENV, "").strip()
    for part in re.split(r"\s+", key):
        register_secret(part)  # every piece, so not even part of a damaged key is ever shown
    register_secret(key)
    return key


def api_key_from_env() -> str:
    """The API key from the environment; a clear configuration error if it is missing or unsendable.

    A key that cannot travel in an HTTP header (a line break from ``$(cat key)`` of a two-line file,
    a space, a non-ASCII character) is refused with what is wrong and where, never the key itself."""
    key = register_env_key()
    if not key:
        base = os.environ.get(BASE_URL_ENV, "")
        if base and is_loopback(urlsplit(base).hostname or ""):  # a server on this machine
            raise ConfigError(
                f"{API_KEY_ENV} is not set. The local server at {base} needs no Doubleword account: it "
                f"accepts any key unless it was started with --api-key. Run: export {API_KEY_ENV}=sk-local"
            )
        raise ConfigError(
            f"{API_KEY_ENV} is not set. Create a key at https://app.doubleword.ai and run: "
            f"export {API_KEY_ENV}=sk-..."
        )
    problem = _header_problem(key)
    if problem:
        raise ConfigError(
            f"{API_KEY_ENV} cannot be sent as an HTTP header: it {problem}. Set it to the key alone, e.g. "
            f"export {API_KEY_ENV}=\"$(head -n 1 keyfile | tr -d '[:space:]')\""
        )
    return key


def _header_problem(key: str) -> str | None:
    for index, char in enumerate(key, 1):
        where = f"(character {index} of {len(key)})"
        if char in "\r\n":
            return f"holds a line break {where}"
        if char.isspace():
            return f"holds a space or tab {where}"
        if ord(char) < 0x20 or ord(char) == 0x7F:
            return f"holds a control character {where}"
        if ord(char) > 0x7E:
            return f"holds a non-ASCII character {where}"
    return None


def is_loopback(host: str) -> bool:
    """Only ``localhost`` and loopback IP literals (``127.evil.example`` is a name, not a loopback)."""
    host = host.strip("[]")
    if host.lower().rstrip(".") == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
