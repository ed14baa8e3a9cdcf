"""A fetch's first content request, sent while the modules load.

Starting Python and importing requests takes ~0.1 s, our modules ~0.03 s more: meanwhile a server could
already be sending. When the manifest says a batch has finished and the output folder is new (so the
download must start at line 0), its output content is asked for at once on a plain socket (TLS by the
standard library, verified against the same CA bundle as requests), and the reply is left for requests
to read (:meth:`doubleword.client.ApiClient.request` adopts it: the same parsing, watchdog, progress and
errors as any stream). On a real network the connection and TLS handshakes happen under the imports too.

Only where requests would send the same request to the same place: a plain ``scheme://host[:port]/path``
base URL (http only to this machine), no proxy in the environment, a key that can be sent.
Anything else, or any failure here, and nothing is sent early: the request goes out as usual.
"""

from __future__ import annotations

import os
import re
import socket
import threading
from typing import Any

from doubleword.config import (
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    TERMINAL_STATUSES,
    USER_AGENT,
    api_key_from_env,
    is_loopback,
)
from doubleword.errors import ConfigError

_PLAIN_URL = re.compile(
    r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::([1-9][0-9]{0,4}))?(/[a-z0-9._~/-]*)?", re.I
)
_PROXIES = ("http_proxy", "https_proxy", "all_proxy")


class HeadStart:
    """``GET path`` sent from a thread; :meth:`take` hands its socket over once, to the matching request."""

    def __init__(self, scheme: str, host: str, port: str | None, path: str, key: str) -> None:
        self.url = f"{scheme}://{host}{f':{port}' if port else ''}{path}"  # as the client writes it
        number = int(port) if port else (443 if scheme == "https" else 80)
        self._sock: socket.socket | None = None
        request = (
            f"GET {path} HTTP/1.1\r\nHost: {host if port is None else f'{host}:{port}'}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept-Encoding: identity\r\nAccept: */*\r\nConnection: close\r\n"
            f"Authorization: Bearer {key}\r\n\r\n"
        ).encode("ascii")
        self._thread = threading.Thread(
            target=self._send,
            args=(scheme, host.strip("[]"), number, request),
            name="head-start",
            daemon=True,
        )
        self._thread.start()

    def _send(self, scheme: str, host: str, port: int, request: bytes) -> None:
        sock = None
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
            if scheme == "https":
                sock = _tls_context().wrap_socket(sock, server_hostname=host)
            sock.settimeout(READ_TIMEOUT)
            sock.sendall(request)
            self._sock = sock
        except (OSError, ValueError):  # nothing to report: the request is sent again the usual way
            if sock is not None:
                sock.close()

    def take(self, url: str) -> socket.socket | None:
        """The socket the request for ``url`` was sent on (once), or None."""
        if url != self.url:
            return None
        self._thread.join(CONNECT_TIMEOUT + 1)
        sock, self._sock, self.url = self._sock, None, ""
        return sock

    def close(self) -> None:
        """Not taken (the download went another way): the server's reply is dropped."""
        self.url = ""
        self._thread.join(CONNECT_TIMEOUT + 1)
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _tls_context() -> Any:
    """Verification as requests does it: the environment's CA bundle, else certifi's (requests' own)."""
    import ssl

    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if not bundle:
        import certifi

        bundle = certifi.where()
    if os.path.isdir(bundle):
        return ssl.create_default_context(capath=bundle)
    return ssl.create_default_context(cafile=bundle)


def _answered(shard: Any) -> bool:
    counts = shard.request_counts if isinstance(shard.request_counts, dict) else {}
    return bool(shard.batch_id and shard.output_file_id and counts.get("completed"))


def begin(base_url: str, shards: list[Any], fresh: bool) -> HeadStart | None:
    """Send the first output request of a fresh download of ``shards`` now, if it is safe (see above)."""
    shard = next((s for s in shards if s.status in TERMINAL_STATUSES and _answered(s)), None)
    match = _PLAIN_URL.fullmatch(base_url.strip())
    if not fresh or shard is None or match is None or not re.fullmatch(r"[\w-]+", str(shard.output_file_id)):
        return None
    env = {name.lower(): value.strip() for name, value in os.environ.items() if value.strip()}
    if any(name in env for name in _PROXIES) and env.get("no_proxy") != "*":
        return None
    scheme, host, port, path = match.group(1).lower(), match.group(2).lower(), match.group(3), match.group(4)
    if (scheme == "http" and not is_loopback(host)) or (port is not None and not 0 < int(port) < 65536):
        return None
    try:
        key = api_key_from_env()
    except ConfigError:
        return None
    if len(key) >= 8 and key in base_url:
        return None
    target = f"{(path or '').rstrip('/')}/files/{shard.output_file_id}/content?skip=0"
    return HeadStart(scheme, host, port, target, key)
