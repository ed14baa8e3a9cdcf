"""A hostile-server kit: the emulator behind a scripted man-in-the-middle, or a bare scripted server.

The real API is the emulator; :class:`HostileProxy` sits in front of it (scripts point their base URL at
the proxy) and, per request, either forwards it unchanged or applies every matching *behaviour* (they combine):
a canned reply, an edited upstream reply, a stall, a trickle, a redirect, a lagging list. Everything
the scripts sent is recorded in ``proxy.seen``. Behaviours are plain functions ``(seen, proxy) ->
Action | None``, built by the helpers below, so a test reads as the attack it is::

    with EmulatorServer(...) as emu, HostileProxy(emu.base_url) as proxy:
        proxy.add(html_page(on=CONTENT, times=1))
        run_script("fetch_results", "--manifest", m, env=script_env(proxy.base_url))

With ``upstream=None`` nothing is forwarded: every request must be answered by a behaviour (else 599).
Stdlib only, plus ``requests`` for forwarding.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode

import requests
from scripted_server import http_server, read_request

# Route patterns (matched against the path after the /v1 prefix).
CONTENT = r"^/files/[^/]+/content$"
FILES = r"^/files$"
FILE = r"^/files/[^/]+$"
BATCHES = r"^/batches$"
BATCH = r"^/batches/[^/]+$"
MODELS = r"^/models$"
ANY = r".*"


@dataclass
class Seen:
    """One request as the proxy received it."""

    method: str
    path: str  # after the /v1 prefix
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes = field(repr=False)
    raw_path: str = ""
    at: float = 0.0


@dataclass
class Upstream:
    """A reply (from the upstream, or made up) that behaviours may edit before it is sent."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def set_json(self, value: Any) -> Upstream:
        self.body = json.dumps(value).encode()
        self.headers["Content-Type"] = "application/json"
        return self


@dataclass
class Action:
    """What to do with one request. ``reply`` None means forward (then ``edit`` the upstream reply)."""

    reply: Upstream | None = None
    edit: Callable[[Upstream, Seen], Upstream] | None = None
    rewrite_query: Callable[[dict[str, str]], dict[str, str]] | None = None
    stall: float = 0.0  # seconds to wait before sending anything
    stall_after_headers: float = 0.0  # seconds to wait after the headers, before the body
    trickle: tuple[int, float] | None = None  # (bytes, seconds): send the body this slowly
    close_without_reply: bool = False
    raw: Callable[[Upstream, Seen], Iterable[bytes]] | None = None  # the bytes to send instead, then close


Behaviour = Callable[[Seen, "HostileProxy"], "Action | None"]


def merge(actions: list[Action]) -> Action:
    """Every matching behaviour applies: the first canned reply, all edits in order, the longest stalls."""
    out = Action()
    for action in actions:
        out.reply = out.reply or action.reply
        out.edit = _chain(out.edit, action.edit)
        out.rewrite_query = _chain(out.rewrite_query, action.rewrite_query)
        out.stall = max(out.stall, action.stall)
        out.stall_after_headers = max(out.stall_after_headers, action.stall_after_headers)
        out.trickle = out.trickle or action.trickle
        out.close_without_reply = out.close_without_reply or action.close_without_reply
        out.raw = out.raw or action.raw
    return out


def _chain(first: Any, second: Any) -> Any:
    if first is None or second is None:
        return first or second
    if first.__code__.co_argcount == 2:
        return lambda value, seen: second(first(value, seen), seen)
    return lambda value: second(first(value))


class HostileProxy:
    """An HTTP/1.1 server on 127.0.0.1:free port; forwards to ``upstream`` unless a behaviour says otherwise."""

    def __init__(
        self, upstream: str | None, *, host: str = "127.0.0.1", tls: tuple[str, str] | None = None
    ) -> None:
        self.upstream = upstream.rstrip("/") if upstream else None
        self.behaviours: list[Behaviour] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {}  # for behaviours that remember (lagging lists, counters)
        self._session = requests.Session()
        self._session.trust_env = False
        self.httpd = http_server(host, self._serve, protocol_version="HTTP/1.1")
        self.port = self.httpd.server_address[1]
        if tls is not None:  # (certificate file, key file): serve https
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"{'https' if tls else 'http'}://{host}:{self.port}"
        self.base_url = self.url + "/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def add(self, *behaviours: Behaviour) -> HostileProxy:
        self.behaviours.extend(behaviours)
        return self

    def requests_to(self, pattern: str, method: str | None = None) -> list[Seen]:
        return [s for s in self.seen if re.search(pattern, s.path) and (method is None or s.method == method)]

    # -- serving

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        request = read_request(handler)
        seen = Seen(
            request.method,
            re.sub(r"^/(ai/)?v1", "", request.path) or "/",
            dict(parse_qsl(request.query, keep_blank_values=True)),
            request.headers,
            request.body,
            request.target,
            time.monotonic(),
        )
        with self.lock:
            self.seen.append(seen)
            action = merge([a for a in (b(seen, self) for b in self.behaviours) if a is not None])
        if action.stall:
            time.sleep(action.stall)
        if action.close_without_reply:
            handler.close_connection = True
            return
        reply = action.reply or self._forward(seen, handler, action)
        if action.edit is not None:
            reply = action.edit(reply, seen)
        if action.raw is not None:
            handler.close_connection = True
            try:
                for piece in action.raw(reply, seen):
                    handler.wfile.write(piece)
                    handler.wfile.flush()
            except OSError:
                pass
            return
        self._send(handler, reply, action)

    def _forward(self, seen: Seen, handler: BaseHTTPRequestHandler, action: Action) -> Upstream:
        if self.upstream is None:
            return Upstream(599, {"Content-Type": "text/plain"}, b"no behaviour for this request")
        query = action.rewrite_query(dict(seen.query)) if action.rewrite_query else seen.query
        headers = {
            k: v for k, v in seen.headers.items() if k.lower() not in ("host", "content-length", "connection")
        }
        response = self._session.request(
            seen.method, self.upstream + seen.path, params=query, data=seen.body, headers=headers, timeout=30
        )
        keep = {k: v for k, v in response.headers.items() if k.lower() not in _HOP_HEADERS}
        return Upstream(response.status_code, keep, response.content)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, reply: Upstream, action: Action) -> None:
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(reply.body)))
            handler.end_headers()
            handler.wfile.flush()
            if action.stall_after_headers:
                time.sleep(action.stall_after_headers)
            if action.trickle:
                size, pause = action.trickle
                for start in range(0, len(reply.body), size):
                    handler.wfile.write(reply.body[start : start + size])
                    handler.wfile.flush()
                    time.sleep(pause)
            else:
                handler.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> HostileProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_HOP_HEADERS = {
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "content-encoding",
    "date",
    "server",
}


# -- behaviour helpers: each returns a Behaviour


def _matches(seen: Seen, on: str, method: str | None) -> bool:
    return bool(re.search(on, seen.path)) and (method is None or seen.method == method)


def _limited(times: int | None, proxy: HostileProxy, key: str) -> bool:
    """True while a behaviour may still fire (``times`` None: always)."""
    count = proxy.state.get(key, 0)
    if times is not None and count >= times:
        return False
    proxy.state[key] = count + 1
    return True


def reply(status: int, body: bytes | str | Any, *, on: str = ANY, method: str | None = None,
          times: int | None = None, headers: dict[str, str] | None = None, after: int = 0) -> Behaviour:  # fmt: skip
    """Answer matching requests with a fixed reply (a dict or list body is sent as JSON), once ``after``
    matching requests went through untouched."""
    key = f"reply:{id(body)}:{on}"
    if isinstance(body, (dict, list)):
        data, kind = json.dumps(body).encode(), "application/json"
    else:
        data, kind = (body.encode() if isinstance(body, str) else body), "text/plain; charset=utf-8"

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if not _matches(seen, on, method):
            return None
        passed = proxy.state.get(key + ":passed", 0)
        if passed < after:
            proxy.state[key + ":passed"] = passed + 1
            return None
        if _limited(times, proxy, key):
            return Action(reply=Upstream(status, {"Content-Type": kind, **(headers or {})}, data))
        return None

    return behaviour


HTML_PAGE = (
    b"<!DOCTYPE html>\n<html>\n<head><title>502 Bad Gateway</title></head>\n<body>\n"
    b"<h1>Bad Gateway</h1>\n<p>The proxy could not reach the server.</p>\n</body>\n</html>\n"
)


def html_page(*, on: str = CONTENT, times: int | None = 1, status: int = 200) -> Behaviour:
    """A proxy's HTML error page, served with 200 (the worst case: it looks like success)."""
    return reply(status, HTML_PAGE, on=on, times=times, headers={"Content-Type": "text/html"})


def capped_pages(cap: int, *, on: str = CONTENT, claim_complete: bool = True) -> Behaviour:
    """Serve at most ``cap`` lines per content reply, whatever was asked; optionally claim there is no more."""

    def edit(up: Upstream, seen: Seen) -> Upstream:
        lines = up.body.splitlines(keepends=True)
        up.body = b"".join(lines[:cap])
        skip = int(seen.query.get("skip") or 0)
        up.headers["X-Last-Line"] = str(skip + min(cap, len(lines)))
        if claim_complete:
            up.headers["X-Incomplete"] = "false"
        return up

    return lambda seen, proxy: Action(edit=edit) if _matches(seen, on, "GET") else None


def ignore_skip(*, on: str = CONTENT) -> Behaviour:
    """A cache that ignores ``skip``: every content reply starts again from line 0."""

    def rewrite(query: dict[str, str]) -> dict[str, str]:
        return {k: v for k, v in query.items() if k != "skip"}

    return lambda seen, proxy: Action(rewrite_query=rewrite) if _matches(seen, on, "GET") else None


def stall(seconds: float, *, on: str = ANY, method: str | None = None, after_headers: bool = False,
          times: int | None = None) -> Behaviour:  # fmt: skip
    """Hold matching replies for ``seconds`` (before anything, or after the headers)."""
    key = f"stall:{on}:{method}:{after_headers}"

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if _matches(seen, on, method) and _limited(times, proxy, key):
            return Action(
                stall=0 if after_headers else seconds, stall_after_headers=seconds if after_headers else 0
            )
        return None

    return behaviour


def trickle(size: int, pause: float, *, on: str = ANY, method: str | None = None) -> Behaviour:
    """Send matching bodies ``size`` bytes at a time, ``pause`` seconds apart."""
    return lambda seen, proxy: Action(trickle=(size, pause)) if _matches(seen, on, method) else None


def edit_json(change: Callable[[Any], Any], *, on: str = ANY, method: str | None = None,
              times: int | None = None) -> Behaviour:  # fmt: skip
    """Forward, then change the upstream's JSON reply (``change`` returns the new value)."""
    key = f"edit:{id(change)}"

    def edit(up: Upstream, seen: Seen) -> Upstream:
        try:
            return up.set_json(change(up.json()))
        except ValueError:
            return up

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if _matches(seen, on, method) and _limited(times, proxy, key):
            return Action(edit=edit)
        return None

    return behaviour


def drop_id(*, on: str, method: str = "POST", times: int | None = 1) -> Behaviour:
    """The create succeeds upstream but the reply comes back without its ``id``."""
    return edit_json(
        lambda body: {k: v for k, v in body.items() if k != "id"}, on=on, method=method, times=times
    )


def lose_reply(*, on: str, method: str = "POST", times: int | None = 1) -> Behaviour:
    """The request reaches the upstream (the object is made) but the connection drops before the reply."""
    key = f"lose:{on}"

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if _matches(seen, on, method) and _limited(times, proxy, key):
            proxy._forward(seen, None, Action())  # type: ignore[arg-type]
            return Action(close_without_reply=True)
        return None

    return behaviour


def lagging_lists(lag: float, *, lists: str = r"^/(files|batches)$") -> Behaviour:
    """List replies lag ``lag`` seconds behind writes: after a create, lists show the state before it."""

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if seen.method == "POST" and re.search(r"^/(files|batches)$", seen.path):
            proxy.state["last_write"] = time.monotonic()
            return None
        if seen.method == "GET" and re.search(lists, seen.path):
            written = proxy.state.get("last_write")
            if written is not None and time.monotonic() - written < lag:
                empty = {"object": "list", "data": [], "has_more": False, "first_id": None, "last_id": None}
                return Action(
                    reply=Upstream(200, {"Content-Type": "application/json"}, json.dumps(empty).encode())
                )
        return None

    return behaviour


def redirect(
    status: int, to: str, *, on: str = ANY, method: str | None = None, times: int | None = 1
) -> Behaviour:
    """Answer with a redirect to ``to`` (a full URL, or a path on this proxy, kept with its query)."""
    key = f"redirect:{on}:{status}"

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if _matches(seen, on, method) and _limited(times, proxy, key):
            target = to if "://" in to else proxy.url + to
            query = urlencode(seen.query)
            location = f"{target}?{query}" if query and "?" not in target else target
            return Action(reply=Upstream(status, {"Location": location, "Content-Type": "text/plain"}, b""))
        return None

    return behaviour


def echo_authorization(status: int = 401, *, encode: Callable[[str], str] = lambda s: s) -> Behaviour:
    """A server that echoes the Authorization header (encoded as asked) in its error body."""

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        header = seen.headers.get("Authorization", "")
        text = f"Authentication failed for header: {encode(header)}"
        return Action(reply=Upstream(status, {"Content-Type": "text/plain"}, text.encode()))

    return behaviour


# -- broken HTTP framing: the reply's bytes written by hand (then the connection is closed)


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = (
        [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()] + ["Connection: close", "", ""]
    )
    return "\r\n".join(lines).encode()


def _kept(up: Upstream, *drop: str) -> dict[str, str]:
    return {
        k: v for k, v in up.headers.items() if k.lower() not in ("content-length", "transfer-encoding", *drop)
    }


def _no_final_newline(up: Upstream, seen: Seen) -> Iterator[bytes]:
    body = up.body[:-1] if up.body.endswith(b"\n") else up.body
    yield _head(up.status, {**_kept(up), "Content-Length": str(len(body))}) + body


def _cut_mid_line(up: Upstream, seen: Seen) -> Iterator[bytes]:
    lines = up.body.splitlines(keepends=True)
    keep = b"".join(lines[: len(lines) // 2]) + lines[len(lines) // 2][:7]  # half the lines, then 7 bytes
    yield _head(up.status, {**_kept(up), "Content-Length": str(len(up.body))}) + keep


def _short_length(up: Upstream, seen: Seen) -> Iterator[bytes]:
    yield _head(up.status, {**_kept(up), "Content-Length": str(max(0, len(up.body) - 9))}) + up.body


def _long_length(up: Upstream, seen: Seen) -> Iterator[bytes]:
    yield _head(up.status, {**_kept(up), "Content-Length": str(len(up.body) + 500)}) + up.body


def _bad_chunked(up: Upstream, seen: Seen) -> Iterator[bytes]:
    half = up.body[: len(up.body) // 2]
    yield _head(up.status, {**_kept(up), "Transfer-Encoding": "chunked"}) + b"%x\r\n%s\r\n" % (
        len(half),
        half,
    )
    yield b"zz-not-a-size\r\n" + up.body[len(half) :]


@functools.cache
def gzip_bomb_body() -> bytes:
    """A 2 MB gzip body that expands to 1 GB (a million 1 kB lines of spaces, in 1024 gzip members)."""
    import gzip

    return gzip.compress((b" " * 1023 + b"\n") * 1024) * 1024


def _gzip_bomb(up: Upstream, seen: Seen) -> Iterator[bytes]:
    body = gzip_bomb_body()
    yield _head(200, {"Content-Type": "application/x-ndjson", "Content-Encoding": "gzip",
                      "Content-Length": str(len(body))}) + body  # fmt: skip


def _endless(up: Upstream, seen: Seen) -> Iterator[bytes]:
    """A JSON-looking reply that never ends (chunked, 64 kB of spaces at a time)."""
    yield _head(200, {"Content-Type": "application/json", "Transfer-Encoding": "chunked"}) + b'2\r\n{"\r\n'
    chunk = b" " * 65536
    while True:
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk)


def _endless_line(up: Upstream, seen: Seen) -> Iterator[bytes]:
    """An NDJSON reply whose first line never ends (chunked, 256 kB of ``x`` at a time)."""
    yield _head(200, {"Content-Type": "application/x-ndjson", "Transfer-Encoding": "chunked"})
    yield b'8\r\n{"id": "\r\n'
    chunk = b"x" * 262144
    while True:
        yield b"%x\r\n%s\r\n" % (len(chunk), chunk)


FRAMINGS: dict[str, Callable[[Upstream, Seen], Iterable[bytes]]] = {
    "no-final-newline": _no_final_newline,
    "cut-mid-line": _cut_mid_line,
    "content-length-short": _short_length,
    "content-length-long": _long_length,
    "broken-chunked": _bad_chunked,
    "gzip-bomb": _gzip_bomb,
    "endless": _endless,
    "endless-line": _endless_line,
}


def framing(kind: str, *, on: str = CONTENT, method: str = "GET", times: int | None = 1) -> Behaviour:
    """Forward, then send the reply with broken framing (see FRAMINGS) and close the connection."""
    key = f"framing:{kind}:{on}"

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if _matches(seen, on, method) and _limited(times, proxy, key):
            return Action(raw=FRAMINGS[kind])
        return None

    return behaviour


def silent_mid_body(
    release: threading.Event,
    *,
    on: str = CONTENT,
    method: str = "GET",
    when: Callable[[Seen], bool] = lambda seen: True,
    times: int | None = None,
    head: bool = True,
) -> Behaviour:
    """Forward, then send the reply's headers (its whole length) and the first half of its lines, and then
    nothing until ``release`` is set (at most 120 s): a server gone silent in the middle of a body. With
    ``head=False`` nothing at all is sent (a server still at work on the request, silently). Only for
    requests ``when`` accepts (``times`` of them at most); ``proxy.state["silent"]`` counts the replies
    that have gone silent."""
    key = f"silent:{on}:{id(when)}"

    def send(proxy: HostileProxy, up: Upstream, seen: Seen) -> Iterator[bytes]:
        lines = up.body.splitlines(keepends=True)
        half = b"".join(lines[: len(lines) // 2])
        if head:
            yield _head(up.status, {**_kept(up), "Content-Length": str(len(up.body))}) + half
        with proxy.lock:
            proxy.state["silent"] = proxy.state.get("silent", 0) + 1
        release.wait(120)

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if _matches(seen, on, method) and when(seen) and _limited(times, proxy, key):
            return Action(raw=functools.partial(send, proxy))
        return None

    return behaviour


# -- a SOCKS5 proxy (RFC 1928, no authentication): relays to the requested host, or misbehaves first


class SocksProxy:
    """A SOCKS5 proxy on 127.0.0.1:free port (``url`` is ``socks5h://...``). ``targets`` records every
    CONNECT it relayed; ``handshake_pause`` sends each byte of its handshake replies that many seconds apart
    (a proxy that trickles or stalls its handshake)."""

    def __init__(self, *, handshake_pause: float = 0.0) -> None:
        self.handshake_pause = handshake_pause
        self.targets: list[tuple[str, int]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"socks5h://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _send(self, sock: socket.socket, data: bytes) -> None:
        if not self.handshake_pause:
            sock.sendall(data)
            return
        for byte in data:
            time.sleep(self.handshake_pause)
            sock.sendall(bytes([byte]))

    def _serve(self, client: socket.socket) -> None:
        try:
            with client:
                greeting = _recv_exactly(client, 2)
                _recv_exactly(client, greeting[1])  # the methods offered
                self._send(client, b"\x05\x00")  # no authentication
                version, _command, _, kind = _recv_exactly(client, 4)
                if kind == 3:
                    host = _recv_exactly(client, _recv_exactly(client, 1)[0]).decode()
                elif kind == 1:
                    host = socket.inet_ntoa(_recv_exactly(client, 4))
                else:
                    host = socket.inet_ntop(socket.AF_INET6, _recv_exactly(client, 16))
                port = int.from_bytes(_recv_exactly(client, 2), "big")
                self.targets.append((host, port))
                with socket.create_connection((host, port), timeout=30) as upstream:
                    self._send(client, b"\x05\x00\x00\x01" + bytes(4) + b"\x00\x00")
                    _relay(client, upstream)
        except OSError:
            pass

    def close(self) -> None:
        self._closed = True
        self.listener.close()

    def __enter__(self) -> SocksProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket) -> None:
    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    other = threading.Thread(target=pump, args=(b, a), daemon=True)
    other.start()
    pump(a, b)
    other.join(timeout=60)
