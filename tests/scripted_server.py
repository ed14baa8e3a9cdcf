"""A tiny scripted HTTP server (stdlib only) for the statuses and behaviours the emulator cannot produce.

Usage::

    def reply(req: Seen) -> tuple[int, dict[str, str], bytes | str]:
        return 503, {"Retry-After": "0"}, "busy"

    with ScriptedServer(reply) as server:
        run_script("list_batches", env=script_env(server.base_url))
        assert server.seen[0].path == "/v1/batches"

Every request is recorded (method, path, query, headers, body) before the reply is chosen; the body is
always read in full so that an upload never sees a reset connection.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Reply = tuple[int, dict[str, str], "bytes | str"]


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    client: str = ""
    target: str = ""  # as sent: path and query


def json_error(status: int, message: str) -> Reply:
    import json

    return status, {"Content-Type": "application/json"}, json.dumps({"error": {"message": message}})


def finished_batch(
    batch_id: str, input_id: str, output_id: str, error_id: str, requests: int
) -> dict[str, Any]:
    """A chat batch as the server shows it once every request completed."""
    return {
        "id": batch_id, "object": "batch", "endpoint": "/v1/chat/completions", "status": "completed",
        "input_file_id": input_id, "output_file_id": output_id, "error_file_id": error_id,
        "created_at": 1767225600, "completed_at": 1767225700,
        "request_counts": {"total": requests, "completed": requests, "failed": 0},
    }  # fmt: skip


def read_request(handler: BaseHTTPRequestHandler) -> Seen:
    """The request with its body read in full (by Content-Length, which the scripts always send), so that
    a client still sending an upload never sees its connection reset by a reply sent early. Shared with
    tests/hostile_server.py."""
    length = int(handler.headers.get("Content-Length") or 0)
    body = handler.rfile.read(length) if length else b""
    parts = urlsplit(handler.path)
    headers = dict(handler.headers.items())
    return Seen(
        handler.command, parts.path, parts.query, headers, body, handler.client_address[0], handler.path
    )


def http_server(
    host: str,
    handle: Callable[[BaseHTTPRequestHandler], None],
    *,
    protocol_version: str = "HTTP/1.0",
    on_connect: Callable[[], None] | None = None,
) -> ThreadingHTTPServer:
    """A threading HTTP server on ``host``:free port (IPv4 or IPv6) that hands every request, whatever its
    method, to ``handle``; ``on_connect`` is called for each connection accepted. Not started."""

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            handle(self)

        do_GET = do_POST = do_DELETE = do_PUT = _handle  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    Handler.protocol_version = protocol_version

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        address_family = socket.AF_INET6 if ":" in host else socket.AF_INET

        def verify_request(self, request, client_address) -> bool:  # type: ignore[no-untyped-def]
            if on_connect is not None:
                on_connect()
            return True

    return Server((host, 0), Handler)


class ScriptedServer:
    """An HTTP/1.0 server on ``host``:free port answering every request with ``reply(seen)``."""

    def __init__(self, reply: Callable[[Seen], Reply] | None = None, host: str = "127.0.0.1") -> None:
        self.reply = reply or (lambda seen: (200, {"Content-Type": "application/json"}, "{}"))
        self.seen: list[Seen] = []
        self.connections = 0
        self.httpd = http_server(host, self._handle, on_connect=self._connected)
        self.host = host
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        self.base_url = self.url + "/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def _connected(self) -> None:
        self.connections += 1

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        seen = read_request(handler)
        self.seen.append(seen)
        status, headers, payload = self.reply(seen)
        data = payload.encode() if isinstance(payload, str) else payload
        handler.send_response(status)
        headers = {"Content-Type": "text/plain; charset=utf-8", **headers}
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> ScriptedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of this machine that is not loopback, or None (no packet is sent)."""
    candidates = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1; a UDP connect only picks a route
            candidates.append(probe.getsockname()[0])
    except OSError:
        pass
    try:
        candidates += socket.gethostbyname_ex(socket.gethostname())[2]
    except OSError:
        pass
    for ip in candidates:
        if ip and not ip.startswith("127.") and ip != "0.0.0.0":
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as test:
                    test.bind((ip, 0))
                return ip
            except OSError:
                continue
    return None


def conftest_module() -> Any:
    """tests/conftest.py as a module, for module-scoped fixtures that cannot take the ``h`` fixture.

    ``from conftest import ...`` is ambiguous once tests/emulator/conftest.py is loaded too, so the file is
    loaded by its path (under another name; its fixtures are not registered twice).
    """
    global _CONFTEST
    if _CONFTEST is None:
        import importlib.util
        from pathlib import Path

        spec = importlib.util.spec_from_file_location(
            "_dwb_tests_conftest", Path(__file__).with_name("conftest.py")
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _CONFTEST = module
    return _CONFTEST


_CONFTEST: Any = None
