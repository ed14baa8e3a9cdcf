"""The one HTTP client every networked script uses: time limits, retries, error mapping, streaming upload.

Retries follow the server's advice: connection errors, 408, 429 and 5xx are retried with exponential
backoff and jitter, honouring ``Retry-After`` (seconds or an HTTP date) and a JSON body's
``retry_after_seconds``. Calls that create something (upload, batch creation) are not replayed blindly:
when their outcome is unknown (a lost reply, a 5xx, a reply without an id) the client raises
:class:`AmbiguousRequest` so the caller can look the object up before trying again
(references/api_reference.md section 9). A host name that does not resolve fails at once. Every wait is
bounded: each read by ``READ_TIMEOUT``, each reply and the whole command by :mod:`doubleword.transport`.
Once :attr:`ApiClient.interrupted` is set (a Ctrl-C), every request in flight is cut, none is sent or
retried, and the thread that made it gets :class:`~doubleword.errors.Interrupted`.
"""

from __future__ import annotations

import datetime
import email.utils
import http.client
import json
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode, urljoin, urlsplit

import requests
import requests.auth

from doubleword.cli import Transfer, info
from doubleword.config import (
    BASE_URL_ENV,
    CONNECT_TIMEOUT,
    READ_TIMEOUT,
    USER_AGENT,
    redact,
    register_secret,
)
from doubleword.errors import AmbiguousRequest, ApiError, DeadlineExceeded, Interrupted, ServiceError
from doubleword.multipart import MultipartFile
from doubleword.shapes import check_reply, is_plain_id
from doubleword.transport import (
    CONNECT,
    CONNECT_BUDGET,
    METER_BYTES,
    REPLY_BUDGET,
    SLOW,
    STOPPED,
    WATCHDOG,
    BearerAuth,
    Watch,
    adopted_response,
    guarded_stream,
    name_not_found,
    never_reached,
    read_capped,
    watched_session,
    watching,
)

if TYPE_CHECKING:
    from doubleword.headstart import HeadStart

# After an upload's body is sent the server stores and validates the file before it answers, silently:
# that wait grows with the file (READ_TIMEOUT + size / UPLOAD_CHECK_RATE: 200 MB -> 30 + 100 s). A shorter
# wait would turn a slow but successful upload into an ambiguous one (and a lookup that may miss it).
UPLOAD_CHECK_RATE = 2_000_000  # bytes per second the server is assumed to check, at the slowest
DEADLINE_GRACE = 10.0  # --timeout + this bounds every request a command makes
MAX_REDIRECTS = 5
URL_SOURCE = f"{BASE_URL_ENV} or --base-url, or the manifest's base_url"
DEFAULT_RETRIES = 6
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 120.0  # a longer wait asked by the server ends the command at once (exit 5, naming it)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def error_message(response: requests.Response) -> str:
    """The server's message from a plain-text or JSON error body (references/api_reference.md section 9)."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: JSON nested deeper than Python can parse
        return text or response.reason or "no message"
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if body.get("message"):
            return str(body["message"])
        if isinstance(error, str):
            return error
    return text


def retry_after_seconds(response: requests.Response) -> float | None:
    """The wait the server asked for: ``Retry-After`` header first, then ``retry_after_seconds``."""
    header = response.headers.get("Retry-After")
    if header:
        header = header.strip()
        try:
            return max(0.0, float(header))
        except ValueError:
            try:  # an HTTP date; garbage raises ValueError (3.11+) or TypeError (3.10)
                parsed = email.utils.parsedate_to_datetime(header)
            except (TypeError, ValueError, OverflowError, IndexError):
                parsed = None
            if parsed is not None:
                if parsed.tzinfo is None:  # "-0000": UTC, not local time
                    parsed = parsed.replace(tzinfo=datetime.timezone.utc)
                return max(0.0, parsed.timestamp() - time.time())
    try:
        body = response.json()
    except (ValueError, RecursionError):
        return None
    if isinstance(body, dict) and isinstance(body.get("retry_after_seconds"), (int, float)):
        return max(0.0, float(body["retry_after_seconds"]))
    return None


class ApiClient:
    """A requests session bound to one base URL and key, with retries, time limits and error mapping.

    ``deadline`` (a ``time.monotonic()`` value, see :meth:`set_deadline`) bounds everything the client
    does: no retry sleeps past it and a request still waiting on the server when it passes is cut
    (:class:`DeadlineExceeded`). Redirects are followed only within the same origin (scheme, host and
    port), so neither the key nor an upload ever goes anywhere the base URL check did not see; a POST
    follows 301, 302, 307 and 308 with its body sent again, and a 303 to a creating call is ambiguous (the
    object may exist already: it is looked up, never made again)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retries: int = DEFAULT_RETRIES,
        timeout: tuple[float, float] | None = None,
        sleep: Callable[[float], None] | None = None,
        on_retry: Callable[[str], None] | None = None,
        deadline: float | None = None,
        url_source: str = URL_SOURCE,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.timeout = timeout or (CONNECT_TIMEOUT, READ_TIMEOUT)
        self.sleep = sleep or self._pause
        self.on_retry = on_retry or (lambda message: info(message))
        self.deadline = deadline
        self.url_source = url_source
        self.reply_budget = REPLY_BUDGET  # seconds for a whole non-streamed reply
        self.calls = 0  # API calls made, for reporting API economy
        # set on a Ctrl-C: requests in other threads are cut (uploads stop sending, downloads reading)
        self.interrupted = threading.Event()
        self.head_start: HeadStart | None = None  # a request sent before this client existed
        register_secret(api_key)
        self.session = watched_session()
        self.session.auth = BearerAuth(api_key)  # set per request: no ~/.netrc lookup can replace it
        self.session.headers.update({"User-Agent": USER_AGENT})
        self.session.max_redirects = MAX_REDIRECTS

    def _pause(self, seconds: float) -> None:
        """The retry sleep: ended by a Ctrl-C (in whichever thread it waits)."""
        if self.interrupted.wait(seconds):
            raise Interrupted

    def set_deadline(self, seconds: float | None) -> None:
        """Bound everything the client does from now on to ``seconds`` (None: no bound)."""
        self.deadline = None if seconds is None else time.monotonic() + max(0.0, seconds)

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Any = None,
        headers: Mapping[str, str] | None = None,
        stream: bool = False,
        creates: bool = False,
        rewind: Callable[[], None] | None = None,
        reply_wait: float | None = None,
    ) -> requests.Response:
        """Send one API call, retrying transient failures; return the successful response.

        ``creates=True`` marks a call that makes a new object: a failure after the request may have
        reached the server (lost reply, 5xx other than 503) raises :class:`AmbiguousRequest` instead of
        being replayed. ``rewind`` resets a streamed body before each retry (and redirect).
        ``reply_wait`` replaces the read timeout for the wait between sending and the reply (an upload).
        """
        if stream and method == "GET" and self.head_start is not None:
            adopted = self._adopt(self.url(path) + (f"?{urlencode(params)}" if params else ""))
            if adopted is not None:
                return adopted
        attempt = 0
        while True:
            attempt += 1
            if rewind is not None and attempt > 1:
                rewind()
            call = _Call(method, self.url(path), params, json_body, data, headers, stream, rewind)
            call.reply_wait, call.creates = reply_wait, creates
            try:
                response = self._send_following(call)
            except _Transient as fault:
                ambiguous = creates and fault.reached
                try:
                    self._transient(method, path, attempt, None, fault.what, ambiguous)
                except AmbiguousRequest as exc:
                    exc.unanswered = fault.unanswered
                    raise
                continue
            if response.ok:
                return response
            status = response.status_code
            message = error_message(response)
            if status in RETRY_STATUSES:
                # 429 and 503 are refusals before any work; other 5xx on a create may have done it.
                ambiguous = creates and status not in (429, 503)
                self._transient(method, path, attempt, response, f"HTTP {status}: {message}", ambiguous)
                continue
            raise ApiError(status, message, method=method, path=path)

    def _adopt(self, url: str) -> requests.Response | None:
        """The reply to ``GET url`` if :mod:`doubleword.headstart` sent it, read like any stream; None when
        it was not sent, or its reply is not a plain success (the request is then made as usual)."""
        assert self.head_start is not None
        sock = self.head_start.take(url)
        if sock is None:
            return None
        self.calls += 1
        watch = Watch(self.deadline, stream=True, stop=self.interrupted)
        watch.replying(sock)
        WATCHDOG.add(watch)
        try:
            response = adopted_response(self.session, url, sock)
        except (OSError, ValueError, http.client.HTTPException):  # sent again below, with its retries
            WATCHDOG.remove(watch)
            sock.close()
            return None
        if not response.ok or response.is_redirect or watch.fired:  # (fired: the head was cut)
            WATCHDOG.remove(watch)
            response.close()
            return None
        watch.streaming(response)
        return guarded_stream(response, watch, _path_of(url))

    def _send_following(self, call: _Call) -> requests.Response:
        """One attempt: send, and follow same-origin redirects (a POST with its body re-sent; not a 303)."""
        for _ in range(MAX_REDIRECTS + 1):
            response = self._send(call)
            if not response.is_redirect:
                return response
            location = urljoin(call.url, response.headers.get("Location", ""))
            response.close()
            if call.creates and response.status_code == 303:  # "see other": the object may be made already
                raise AmbiguousRequest(
                    f"{call.method} {_path_of(call.url)}: the server answered 303 See Other (to "
                    f"{_origin(location)}{_path_of(location)}); the outcome is unknown"
                )
            _check_redirect(call, location)
            if call.rewind is not None:
                call.rewind()
            call.url, call.params = location, None
            if call.method != "POST" and response.status_code == 303:
                call.method = "GET"
        raise ServiceError(f"{call.method} {call.url}: more than {MAX_REDIRECTS} redirects")

    def _send(self, call: _Call) -> requests.Response:
        """One HTTP exchange under a :class:`Watch`; faults become :class:`_Transient`."""
        if self.interrupted.is_set():
            raise Interrupted
        remaining = self._remaining(f"{call.method} {call.url}")
        connect, read = self.timeout
        budget = self.reply_budget
        if call.reply_wait is not None and call.reply_wait > read:
            read, budget = call.reply_wait, budget + call.reply_wait - read
        timeout = (min(connect, remaining), min(read, remaining))
        watch = Watch(self.deadline, stream=call.stream, budget=budget, stop=self.interrupted)
        headers = dict(call.headers or {})
        if call.stream:
            headers["Connection"] = "close"  # a cut stream's socket is never handed to another request
        self.calls += 1
        try:
            with watching(watch):
                response = self.session.request(
                    call.method,
                    call.url,
                    params=call.params,
                    json=call.json_body,
                    data=call.data,
                    headers=headers,
                    stream=True,  # a plain reply is read below, within transport.MAX_REPLY_BYTES
                    timeout=timeout,
                    allow_redirects=False,
                )
                _whole(watch, response)
                if call.stream and response.ok and not response.is_redirect:
                    watch.streaming(response)
                    return guarded_stream(response, watch, _path_of(call.url))
                read_capped(response, f"{call.method} {_path_of(call.url)}")  # a cut or endless reply: here
                _whole(watch, response)
            WATCHDOG.remove(watch)
            return response
        except requests.exceptions.ConnectionError as exc:
            WATCHDOG.remove(watch)
            self._cut_or_raise(watch, call)
            if name_not_found(exc):
                raise ServiceError(self._unresolvable()) from None
            # A refused connection never reached the server; a dropped one might have.
            raise _Transient(f"connection failed ({_short(exc)})", reached=not never_reached(exc)) from None
        except (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
            WATCHDOG.remove(watch)
            self._cut_or_raise(watch, call)
            unanswered = isinstance(exc, requests.exceptions.ReadTimeout)
            raise _Transient(
                f"no complete reply ({_short(exc)})", reached=True, unanswered=unanswered
            ) from None
        except requests.exceptions.RequestException as exc:
            WATCHDOG.remove(watch)
            raise ServiceError(f"{call.method} {call.url}: request failed: {_short(exc)}") from None
        except BaseException:
            WATCHDOG.remove(watch)
            raise

    def _cut_or_raise(self, watch: Watch, call: _Call) -> None:
        """After a failed exchange: say so if the watchdog cut it (a Ctrl-C, the deadline, a reply too
        slow). A Ctrl-C's cut is no fault of the server's: never retried, and for a creating call not
        ambiguous here either (the run stops; a re-run looks the object up, as after any interrupt)."""
        if watch.fired == STOPPED or self.interrupted.is_set():
            raise Interrupted
        if watch.out_of_time():
            raise DeadlineExceeded(
                f"{call.method} {_path_of(call.url)}: --timeout reached while waiting for the server; "
                "run the command again to carry on"
            )
        if watch.fired == SLOW:
            raise _Transient(
                f"no complete reply within {watch.budget:.0f}s (the server is too slow)",
                reached=True,
                unanswered=True,
            )
        if watch.fired == CONNECT:
            raise _Transient(f"the proxy's handshake took more than {CONNECT_BUDGET:.0f}s", reached=False)

    def _remaining(self, what: str) -> float:
        if self.deadline is None:
            return math.inf
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineExceeded(f"{what}: --timeout reached before the call; run the command again")
        return remaining

    def _unresolvable(self) -> str:
        host = urlsplit(self.base_url).hostname or self.base_url
        return (
            f"cannot find the host {host}: the name does not resolve. Check the base URL {self.base_url} "
            f"(set by {self.url_source}); retrying would not help"
        )

    def _transient(
        self,
        method: str,
        path: str,
        attempt: int,
        response: requests.Response | None,
        what: str,
        ambiguous: bool,
    ) -> None:
        if ambiguous:
            raise AmbiguousRequest(f"{method} {path}: {what}; the outcome is unknown")
        if attempt > self.retries:
            raise ServiceError(f"{method} {path}: {what} (gave up after {attempt} attempts)")
        hinted = retry_after_seconds(response) if response is not None else None
        if hinted is not None and hinted > MAX_RETRY_AFTER:
            raise ServiceError(f"{method} {path}: {what}; {_wait_asked(hinted)}")
        if hinted is not None:
            delay = hinted
        else:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if self.deadline is not None and time.monotonic() + delay >= self.deadline:
            raise DeadlineExceeded(f"{method} {path}: {what}; --timeout leaves no time to retry")
        self.on_retry(redact(f"retrying {method} {path} in {delay:.1f}s: {what}"))
        self.sleep(delay)

    # -- typed helpers

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET a JSON reply, checked for the shape its route promises (:mod:`doubleword.shapes`)."""
        return check_reply("GET", path, _json(self.request("GET", path, params=params), path))

    def post_json(self, path: str, body: Any = None, *, creates: bool = False) -> Any:
        response = self.request("POST", path, json_body=body, creates=creates)
        reply = _created(response, "POST", path) if creates else _json(response, path)
        return check_reply("POST", path, reply)

    def upload_file(
        self,
        path: str | os.PathLike[str],
        filename: str,
        fields: Mapping[str, str],
        *,
        endpoint: str = "files",
    ) -> Any:
        """Stream a multipart upload of a file from disk (never held in memory); a create call."""
        body = MultipartFile(path, filename, fields)
        headers = {"Content-Type": body.content_type, "Content-Length": str(len(body))}
        meter = Transfer(f"uploading {filename}", len(body)) if len(body) >= METER_BYTES else None
        body.meter, body.interrupted = meter, self.interrupted
        try:
            response = self.request(
                "POST", endpoint, data=body, headers=headers, creates=True, rewind=body.rewind,
                reply_wait=upload_reply_wait(len(body)),
            )  # fmt: skip
        finally:
            body.close()
            if meter is not None:
                info(meter.finish())
        return check_reply("POST", endpoint, _created(response, "POST", endpoint))


def _whole(watch: Watch, response: requests.Response) -> None:
    """Refuse what the watchdog cut: http.client takes the end of a cut head for the end of the headers,
    and a body read until the close for whole (the cut's reason is then given by _cut_or_raise)."""
    if watch.fired:
        response.close()
        raise requests.exceptions.ConnectionError(f"the reply was cut ({watch.fired})")


def _wait_asked(seconds: float) -> str:
    """The server's long Retry-After in words, with the time to try again (any number, even inf)."""
    if not math.isfinite(seconds) or seconds > 366 * 86400:
        return "the server asks to wait more than a year: try again later, or ask its operator"
    until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)
    return f"the server asks to wait {seconds:.0f}s: try again after {until:%Y-%m-%d %H:%M} UTC"


def upload_reply_wait(size: int) -> float:
    """How long to wait, after sending an upload of ``size`` bytes, for the server's reply."""
    return READ_TIMEOUT + size / UPLOAD_CHECK_RATE


class _Call:
    """What one API call sends; a redirect changes its URL (and a 303 its method)."""

    reply_wait: float | None = None
    creates = False

    def __init__(
        self,
        method: str,
        url: str,
        params: Mapping[str, Any] | None,
        json_body: Any,
        data: Any,
        headers: Mapping[str, str] | None,
        stream: bool,
        rewind: Callable[[], None] | None,
    ) -> None:
        self.method, self.url, self.params = method, url, params
        self.json_body, self.data, self.headers = json_body, data, headers
        self.stream, self.rewind = stream, rewind


class _Transient(Exception):
    """A failed exchange worth retrying; ``reached`` when the request may have reached the server."""

    def __init__(self, what: str, *, reached: bool, unanswered: bool = False) -> None:
        super().__init__(what)
        self.what = what
        self.reached = reached
        self.unanswered = unanswered  # sent whole, no reply in time: the server may still be at work


def _check_redirect(call: _Call, location: str) -> None:
    """Refuse a redirect that would take the key or the body anywhere but the same origin."""
    here, there = urlsplit(call.url), urlsplit(location)
    same = (here.scheme, here.hostname, here.port) == (there.scheme, there.hostname, there.port)
    where = f"{call.method} {_path_of(call.url)}"
    if not same:
        raise ServiceError(
            f"{where}: the server redirected to {_origin(location)}, another address; not followed, so the "
            "key and data go nowhere the base URL does not name (set the base URL to it if you trust it)"
        )
    if call.method == "POST" and call.data is not None and call.rewind is None:
        raise ServiceError(f"{where}: the server redirected a body that cannot be sent again")


def _path_of(url: str) -> str:
    return urlsplit(url).path or "/"


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}"


def _json(response: requests.Response, path: str) -> Any:
    try:
        return response.json()
    except (ValueError, RecursionError):
        raise ServiceError(f"{path}: the server sent a reply that is not JSON: {response.text[:200]!r}")


def _created(response: requests.Response, method: str, path: str) -> dict[str, Any]:
    """A create call's reply: an object with an id, or :class:`AmbiguousRequest` (look it up, never redo)."""
    try:
        body = response.json()
    except (ValueError, RecursionError):
        body = None
    if not isinstance(body, dict) or not is_plain_id(body.get("id")):
        excerpt = response.text[:200]
        raise AmbiguousRequest(
            f"{method} {path}: the server's reply has no object id, or an unusable one ({excerpt!r}); the outcome is unknown"
        )
    return body


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def client_from_args(args: Any) -> ApiClient:
    """An :class:`ApiClient` configured from the shared flags and the environment.

    A command with ``--timeout`` gets a client bounded by it (plus a short grace for the final check
    the command makes when its own wait ends), so a stalled read cannot outlive the command's limit."""
    from doubleword.config import api_key_from_env, base_url_from

    base_url = base_url_from(args)
    key = api_key_from_env()
    client = ApiClient(base_url, key)
    timeout = getattr(args, "timeout", None)
    if isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and math.isfinite(timeout):
        client.set_deadline(float(timeout) + DEADLINE_GRACE)
    return client


# The HTTP errors live in doubleword.errors; these names stay importable from here too.
__all__ = [
    "AmbiguousRequest",
    "ApiClient",
    "ApiError",
    "client_from_args",
    "error_message",
    "retry_after_seconds",
]
