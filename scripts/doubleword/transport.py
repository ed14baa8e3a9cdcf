"""Time limits no server can stretch: a requests session whose sockets a watchdog can cut.

A read timeout bounds one silent wait, but a server that trickles a byte every few seconds, or a header
line by line, never trips it. Each request here is watched: its socket is shut down when the command's
deadline (``--timeout``) passes, when a plain reply is not complete ``REPLY_BUDGET`` seconds after the
request was sent, or when a streamed body brings less than ``TRICKLE_MIN_BYTES`` in ``TRICKLE_WINDOW``
seconds. The blocked read then fails at once, and the client reports why (:attr:`Watch.fired`). A Ctrl-C
(the client's ``interrupted`` event, handed to each watch as ``stop``) cuts every request in flight the
same way, so a thread waiting on a silent server stops within a tick instead of at its read timeout.

Connections through a SOCKS proxy (``ALL_PROXY=socks5h://...``, which needs PySocks) are watched the
same way, from the proxy handshake on: a proxy that stalls or trickles its handshake is cut after
``CONNECT_BUDGET`` seconds, and every later read is bounded as on a direct connection.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import requests
import requests.auth
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from doubleword.cli import Transfer, info
from doubleword.errors import DeadlineExceeded, Interrupted, ServiceError

METER_BYTES = 1_000_000  # transfers at least this big show byte progress
REPLY_BUDGET = 45.0  # seconds for a whole non-streamed reply, from the end of sending
TRICKLE_WINDOW = 30.0  # a streamed body must bring at least TRICKLE_MIN_BYTES in every such window
TRICKLE_MIN_BYTES = 16 * 1024
MAX_REPLY_BYTES = 32 * 1024 * 1024  # a plain (JSON) reply larger than this, decoded, is refused
CONNECT_BUDGET = 20.0  # seconds for a proxy's handshake (SOCKS), however it trickles
BOMB_RATIO = 200  # a compressed download expanding more than this many times is refused...
BOMB_MIN_BYTES = 4 * 1024 * 1024  # ...once this much has come out of it (NDJSON compresses ~5-20 times)
_TICK = 0.2
STOPPED_CLOSE_WAIT = 1.0  # seconds a stopped response's close may wait for a read blocked on it
_NO_NAME = tuple(getattr(socket, n) for n in ("EAI_NONAME", "EAI_NODATA") if hasattr(socket, n))

DEADLINE = "deadline"
SLOW = "slow"
TRICKLE = "trickle"
CONNECT = "connect"
STOPPED = "stopped"  # the command was interrupted (Ctrl-C): never a fault to retry


class Watch:
    """The limits of one request and the socket they apply to; ``fired`` says which limit cut it."""

    def __init__(
        self,
        deadline: float | None,
        *,
        stream: bool,
        budget: float = REPLY_BUDGET,
        stop: threading.Event | None = None,
    ) -> None:
        self.deadline = deadline
        self.stop = stop  # once set, the request is cut (STOPPED)
        self.stream = stream
        self.budget = budget
        self.sock: socket.socket | None = None
        self.reply_end: float | None = None
        self.connect_end: float | None = None
        self.fired: str | None = None
        self.response: requests.Response | None = None  # for a stream: how many bytes came
        self._window = (time.monotonic(), 0)

    def connecting(self, sock: socket.socket) -> None:
        """A socket exists but is not ready yet (a proxy handshake): bound the handshake too."""
        self.sock = sock
        self.connect_end = time.monotonic() + CONNECT_BUDGET

    def connected(self, sock: socket.socket | None) -> None:
        self.sock = sock
        self.connect_end = None

    def replying(self, sock: socket.socket | None) -> None:
        """The request is sent: the reply's time budget starts now (for a stream, its head's: the body
        is then bounded by the trickle check, :meth:`streaming`)."""
        self.sock = sock
        self.reply_end = time.monotonic() + self.budget

    def streaming(self, response: requests.Response) -> None:
        """A stream's head has come: its body is watched for a trickle from now on, not for its length."""
        self.response = response
        self.reply_end = None

    def out_of_time(self) -> bool:
        """The deadline cut this request (by the watchdog, or by a read timeout capped to it)."""
        if self.fired == DEADLINE:
            return True
        return self.deadline is not None and time.monotonic() >= self.deadline - 0.25

    def check(self, now: float) -> None:
        if self.fired or self.sock is None:
            return
        if self.stop is not None and self.stop.is_set():
            self.cut(STOPPED)
        elif self.deadline is not None and now >= self.deadline:
            self.cut(DEADLINE)
        elif self.connect_end is not None and now >= self.connect_end:
            self.cut(CONNECT)
        elif self.reply_end is not None and now >= self.reply_end:
            self.cut(SLOW)
        elif self.stream and self.response is not None:
            started, seen = self._window
            if now - started >= TRICKLE_WINDOW:
                count = _bytes_read(self.response)
                if count - seen < TRICKLE_MIN_BYTES:
                    self.cut(TRICKLE)
                self._window = (now, count)

    def stopped(self) -> bool:
        """The command was interrupted: this request is to end now (cut, or not sent at all)."""
        return self.fired == STOPPED or (self.stop is not None and self.stop.is_set())

    def cut(self, reason: str) -> None:
        self.fired = reason
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


def _bytes_read(response: requests.Response) -> int:
    """Bytes of the body read from the socket so far (compressed, chunk framing included)."""
    counter = getattr(response, "_dwb_raw", None)
    if counter is not None:
        return int(counter.count)
    try:
        return int(response.raw.tell())  # not counted for chunked bodies by urllib3
    except (AttributeError, TypeError, ValueError):
        return 0


class _CountingReader:
    """The socket file under http.client's response, counting the bytes read through it."""

    def __init__(self, fp: Any) -> None:
        self._fp = fp
        self.count = 0

    def read(self, *args: Any) -> bytes:
        data = self._fp.read(*args)
        self.count += len(data)
        return data

    def read1(self, *args: Any) -> bytes:
        data = self._fp.read1(*args)
        self.count += len(data)
        return data

    def readline(self, *args: Any) -> bytes:
        data = self._fp.readline(*args)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        n = self._fp.readinto(buffer)
        self.count += n or 0
        return n

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)


def count_raw_bytes(response: requests.Response) -> None:
    """Count the body's bytes as they come off the socket (urllib3 does not for a chunked body)."""
    inner = getattr(response.raw, "_fp", None)
    if inner is not None and getattr(inner, "fp", None) is not None:
        counter = _CountingReader(inner.fp)
        inner.fp = counter
        response._dwb_raw = counter  # type: ignore[attr-defined]


class _Watchdog:
    """One daemon thread checking every active :class:`Watch` a few times a second."""

    def __init__(self) -> None:
        self._watches: set[Watch] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.local = threading.local()

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._watches.add(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="dwb-watchdog", daemon=True)
                self._thread.start()

    def remove(self, watch: Watch) -> None:
        with self._lock:
            self._watches.discard(watch)

    def _loop(self) -> None:
        while True:
            time.sleep(_TICK)
            with self._lock:
                watches = list(self._watches)
            now = time.monotonic()
            for watch in watches:
                watch.check(now)


WATCHDOG = _Watchdog()


def current_watch() -> Watch | None:
    return getattr(WATCHDOG.local, "watch", None)


@contextlib.contextmanager
def watching(watch: Watch) -> Any:
    """Make ``watch`` the current thread's: the connection it sends on registers its socket with it."""
    WATCHDOG.local.watch = watch
    WATCHDOG.add(watch)
    try:
        yield watch
    finally:
        WATCHDOG.local.watch = None


class _Tracked:
    """A urllib3 connection that hands its socket to the current :class:`Watch`."""

    sock: socket.socket | None

    def connect(self) -> None:
        super().connect()  # type: ignore[misc]
        watch = current_watch()
        if watch is not None:
            watch.connected(self.sock)

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        watch = current_watch()
        if watch is not None:
            watch.replying(self.sock)
        return super().getresponse(*args, **kwargs)  # type: ignore[misc]


class _HTTPConnection(_Tracked, HTTPConnection):
    pass


class _HTTPSConnection(_Tracked, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOLS = {"http": _HTTPPool, "https": _HTTPSPool}


@functools.cache
def _socks_pools() -> dict[str, type]:
    """Pools whose SOCKS connections report their socket before the proxy handshake (needs PySocks)."""
    from urllib3.contrib.socks import (
        SOCKSConnection,
        SOCKSHTTPConnectionPool,
        SOCKSHTTPSConnection,
        SOCKSHTTPSConnectionPool,
    )

    class _SOCKSConnection(_Tracked, SOCKSConnection):
        _new_conn = _socks_new_conn

    class _SOCKSHTTPSConnection(_Tracked, SOCKSHTTPSConnection):
        _new_conn = _socks_new_conn

    class _SOCKSHTTPPool(SOCKSHTTPConnectionPool):
        ConnectionCls = _SOCKSConnection

    class _SOCKSHTTPSPool(SOCKSHTTPSConnectionPool):
        ConnectionCls = _SOCKSHTTPSConnection

    return {"http": _SOCKSHTTPPool, "https": _SOCKSHTTPSPool}


def _socks_new_conn(conn: Any) -> socket.socket:
    """urllib3's SOCKS connect, with the socket handed to the current :class:`Watch` before the handshake
    (PySocks' ``create_connection`` returns it only once the proxy has answered, however slowly)."""
    import socks
    from urllib3.exceptions import ConnectTimeoutError, NewConnectionError

    opts = conn._socks_options
    proxy_host, proxy_port = str(opts["proxy_host"]).strip("[]"), opts["proxy_port"]
    error: BaseException | None = None
    for family, kind, proto, _, _ in socket.getaddrinfo(proxy_host, proxy_port, 0, socket.SOCK_STREAM):
        sock = socks.socksocket(family, kind, proto)
        try:
            for option in conn.socket_options or ():
                sock.setsockopt(*option)
            if isinstance(conn.timeout, (int, float)):
                sock.settimeout(conn.timeout)
            sock.set_proxy(opts["socks_version"], proxy_host, proxy_port, opts["rdns"],
                           opts["username"], opts["password"])  # fmt: skip
            if conn.source_address:
                sock.bind(conn.source_address)
            watch = current_watch()
            if watch is not None:
                watch.connecting(sock)
            sock.connect((conn.host.strip("[]"), conn.port))
            return sock
        except (OSError, socks.ProxyError) as exc:
            error = exc
            sock.close()
    cause = getattr(error, "socket_err", None) or error
    if isinstance(cause, TimeoutError):
        raise ConnectTimeoutError(conn, f"the SOCKS proxy {proxy_host} did not answer in time")
    raise NewConnectionError(conn, f"Failed to establish a new connection through the SOCKS proxy: {error}")


class WatchedAdapter(HTTPAdapter):
    """An adapter whose connections (direct, through an HTTP proxy or a SOCKS one) report their sockets."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = dict(_POOLS)

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> Any:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        manager.pool_classes_by_scheme = dict(_socks_pools() if proxy.lower().startswith("socks") else _POOLS)
        return manager


def watched_session() -> requests.Session:
    session = requests.Session()
    adapter = WatchedAdapter()
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer KEY`` on every request this session sends (never on a redirect)."""

    def __init__(self, key: str) -> None:
        self._header = f"Bearer {key}"

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "BearerAuth(<hidden>)"


def read_capped(response: requests.Response, what: str) -> None:
    """Read a plain reply's body (decoded) into ``response.content``, refusing one past MAX_REPLY_BYTES."""
    chunks, size = [], 0
    for chunk in response.iter_content(64 * 1024):
        size += len(chunk)
        if size > MAX_REPLY_BYTES:
            response.close()
            raise ServiceError(
                f"{what}: the server's reply is larger than {MAX_REPLY_BYTES // (1024 * 1024)} MB, which no "
                "reply of this API is; not read further"
            )
        chunks.append(chunk)
    response._content = b"".join(chunks)
    response._content_consumed = True  # type: ignore[attr-defined]


def guarded_stream(response: requests.Response, watch: Watch, path: str) -> requests.Response:
    """Make the caller's ``iter_content`` report the watchdog's cuts, show byte progress, and end the watch."""
    plain_iter = response.iter_content
    total = _int_or_none(response.headers.get("Content-Length"))
    label = f"downloading {path}"
    encoding = response.headers.get("Content-Encoding", "").strip().lower()
    compressed = encoding not in ("", "identity")
    count_raw_bytes(response)

    def iter_content(chunk_size: int | None = 1, decode_unicode: bool = False) -> Iterator[Any]:
        meter: Transfer | None = None
        moved = 0
        began = time.monotonic()
        try:
            for chunk in plain_iter(chunk_size=chunk_size, decode_unicode=decode_unicode):
                moved += len(chunk)
                if compressed and moved >= BOMB_MIN_BYTES and moved > BOMB_RATIO * _bytes_read(response):
                    response.close()
                    raise requests.exceptions.ContentDecodingError(
                        f"the server's compressed reply expands more than {BOMB_RATIO} times "
                        f"({_bytes_read(response)} bytes became {moved}): refused as a decompression bomb"
                    )
                if meter is None and (moved >= METER_BYTES or (total or 0) >= METER_BYTES):
                    meter = Transfer(label, total)
                    meter.started = began  # the rate since the first byte, not since the meter appeared
                    meter.add(moved)
                elif meter is not None:
                    meter.add(len(chunk))
                if watch.stopped():  # a Ctrl-C: this download stops at its next chunk
                    raise Interrupted
                yield chunk
            if watch.fired:  # the cut looked like the body's end (a body read until the close)
                raise requests.exceptions.ChunkedEncodingError(f"the reply was cut ({watch.fired})")
        except (requests.exceptions.RequestException, OSError) as exc:
            if watch.stopped():
                raise Interrupted from None
            if watch.out_of_time():
                raise DeadlineExceeded(
                    f"GET {path}: --timeout reached during the download; run again to resume"
                ) from None
            if watch.fired == TRICKLE:
                raise requests.exceptions.ChunkedEncodingError(
                    f"the server sent less than {TRICKLE_MIN_BYTES // 1024} kB in {TRICKLE_WINDOW:.0f}s"
                ) from None
            raise exc
        finally:
            WATCHDOG.remove(watch)
            if meter is not None:
                info(meter.finish())

    plain_close = response.close

    def close() -> None:
        WATCHDOG.remove(watch)
        if not watch.stopped():
            plain_close()
            return
        # A Ctrl-C: a thread blocked reading this body holds its buffer's lock, so the close would wait
        # for that read to end. The cut ends the read; the close waits for it a bounded time only (the
        # process is exiting, and the operating system closes what is left).
        watch.cut(STOPPED)
        closing = threading.Thread(target=plain_close, name="close-stopped", daemon=True)
        closing.start()
        closing.join(STOPPED_CLOSE_WAIT)

    response.iter_content = iter_content  # type: ignore[method-assign]
    response.close = close  # type: ignore[method-assign]
    return response


def adopted_response(session: requests.Session, url: str, sock: socket.socket) -> requests.Response:
    """The response to ``GET url``, already sent on ``sock`` (:mod:`doubleword.headstart`), as requests
    would have made it: urllib3 reads the body (chunks, length, decoding) as for any request."""
    import http.client

    from urllib3._collections import HTTPHeaderDict
    from urllib3.response import HTTPResponse

    raw = http.client.HTTPResponse(sock, method="GET")
    raw.begin()
    body = HTTPResponse(
        body=raw,
        headers=HTTPHeaderDict(raw.msg.items()),
        status=raw.status,
        version=raw.version,
        reason=raw.reason,
        preload_content=False,
        decode_content=True,
        original_response=raw,
        enforce_content_length=True,
        request_method="GET",
        request_url=url,
    )
    adapter = session.get_adapter(url)
    assert isinstance(adapter, HTTPAdapter)
    return adapter.build_response(requests.Request("GET", url).prepare(), body)


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def never_reached(exc: requests.exceptions.ConnectionError) -> bool:
    """True when the failure came before any connection existed: nothing was sent."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = str(exc)
    # Failures before a connection exists: nothing was sent, so even a create call may be retried.
    before_connect = ("Connection refused", "NewConnectionError", "NameResolutionError", "Failed to resolve")
    return any(s in text for s in before_connect)


def name_not_found(exc: BaseException) -> bool:
    """True when the host name does not resolve (not a passing fault: retrying cannot fix it)."""
    seen: Any = exc
    for _ in range(10):  # requests -> urllib3 MaxRetryError -> NameResolutionError -> socket.gaierror
        if isinstance(seen, socket.gaierror):
            return seen.errno in _NO_NAME
        nested = [seen.__cause__, seen.__context__, getattr(seen, "reason", None), *getattr(seen, "args", ())]
        seen = next((e for e in nested if isinstance(e, BaseException)), None)
        if seen is None:
            break
    text = str(exc)
    return any(
        s in text for s in ("Name or service not known", "nodename nor servname", "No address associated")
    )
