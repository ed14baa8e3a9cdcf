"""The one HTTP client every networked script uses: timeouts, retries, error mapping, streaming upload.

Retries follow the server's advice: connection errors, 408, 429 and 5xx are retried with exponential
backoff and jitter, honouring ``Retry-After`` (seconds or an HTTP date) and a JSON body's
``retry_after_seconds``. Calls that create something (upload, batch creation) are not replayed blindly:
when their outcome is unknown the client raises :class:`AmbiguousRequest` so the caller can look the
object up before trying again (references/api_reference.md section 9).
"""

from __future__ import annotations

import datetime
import email.utils
import json
import os
import random
import time
import uuid
from collections.abc import Callable, Mapping
from typing import IO, Any

import requests

from doubleword.cli import info
from doubleword.config import redact
from doubleword.errors import AmbiguousRequest, ApiError, ServiceError

USER_AGENT = "doubleword-batches/1.0 (+python-requests)"
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 300.0
DEFAULT_RETRIES = 6
BACKOFF_BASE = 1.0
BACKOFF_CAP = 30.0
MAX_RETRY_AFTER = 120.0  # never sleep longer than this on one server hint
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
UPLOAD_CHUNK = 1024 * 1024


def error_message(response: requests.Response) -> str:
    """The server's message from a plain-text or JSON error body (references/api_reference.md section 9)."""
    text = response.text.strip()
    try:
        body = json.loads(text)
    except ValueError:
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
    except ValueError:
        return None
    if isinstance(body, dict) and isinstance(body.get("retry_after_seconds"), (int, float)):
        return max(0.0, float(body["retry_after_seconds"]))
    return None


class ApiClient:
    """A requests session bound to one base URL and key, with retries and error mapping."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        retries: int = DEFAULT_RETRIES,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT, READ_TIMEOUT),
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.timeout = timeout
        self.sleep = sleep
        self.on_retry = on_retry or (lambda message: info(message))
        self.calls = 0  # API calls made, for reporting API economy
        self.session = requests.Session()
        self.session.headers.update({"Authorization": f"Bearer {api_key}", "User-Agent": USER_AGENT})

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
    ) -> requests.Response:
        """Send one API call, retrying transient failures; return the successful response.

        ``creates=True`` marks a call that makes a new object: a failure after the request may have
        reached the server (lost reply, 5xx other than 503) raises :class:`AmbiguousRequest` instead of
        being replayed. ``rewind`` resets a streamed body before each retry.
        """
        attempt = 0
        while True:
            attempt += 1
            if rewind is not None and attempt > 1:
                rewind()
            try:
                self.calls += 1
                response = self.session.request(
                    method,
                    self.url(path),
                    params=params,
                    json=json_body,
                    data=data,
                    headers=headers,
                    stream=stream,
                    timeout=self.timeout,
                )
                if stream and response.ok:
                    return response
                _ = response.content  # read the body now so a truncated reply is detected here
            except requests.exceptions.ConnectionError as exc:
                # A refused connection never reached the server; a dropped one might have.
                reached = not _never_reached(exc)
                what = f"connection failed ({_short(exc)})"
                self._transient(method, path, attempt, None, what, creates and reached)
                continue
            except (requests.exceptions.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                self._transient(method, path, attempt, None, f"no complete reply ({_short(exc)})", creates)
                continue
            except requests.exceptions.RequestException as exc:
                raise ServiceError(f"{method} {path}: request failed: {_short(exc)}")

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
        if hinted is not None:
            delay = min(hinted, MAX_RETRY_AFTER)
        else:
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        self.on_retry(redact(f"retrying {method} {path} in {delay:.1f}s: {what}"))
        self.sleep(delay)

    # -- convenience wrappers

    def get_json(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return _json(self.request("GET", path, params=params), path)

    def post_json(self, path: str, body: Any = None, *, creates: bool = False) -> Any:
        return _json(self.request("POST", path, json_body=body, creates=creates), path)

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
        try:
            response = self.request(
                "POST", endpoint, data=body, headers=headers, creates=True, rewind=body.rewind
            )
        finally:
            body.close()
        return _json(response, endpoint)


def _json(response: requests.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError:
        raise ServiceError(f"{path}: the server sent a reply that is not JSON: {response.text[:200]!r}")


def _never_reached(exc: requests.exceptions.ConnectionError) -> bool:
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    text = str(exc)
    # Failures before a connection exists: nothing was sent, so even a create call may be retried.
    before_connect = (
        "Connection refused",
        "NewConnectionError",
        "NameResolutionError",
        "Failed to resolve",
        "Name or service not known",
        "Temporary failure in name resolution",
    )
    return any(s in text for s in before_connect)


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


class MultipartFile:
    """A ``multipart/form-data`` body read from disk piece by piece, with an exact length.

    requests sends any object with ``read`` and ``__len__`` in chunks, so memory stays flat however
    large the file is. Fields come before the file part (the server checks ``purpose`` first).
    """

    def __init__(self, path: str | os.PathLike[str], filename: str, fields: Mapping[str, str]) -> None:
        self.boundary = f"dwb-{uuid.uuid4().hex}"
        self.content_type = f"multipart/form-data; boundary={self.boundary}"
        head = b"".join(
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            for name, value in fields.items()
        )
        safe_name = filename.replace('"', "_").replace("\r", "_").replace("\n", "_")
        head += (
            f'--{self.boundary}\r\nContent-Disposition: form-data; name="file"; filename="{safe_name}"\r\n'
            "Content-Type: application/jsonl\r\n\r\n"
        ).encode()
        self._head = head
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        self._file: IO[bytes] = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._file_size = os.fstat(self._file.fileno()).st_size
        self.rewind()

    def __len__(self) -> int:
        return len(self._head) + self._file_size + len(self._tail)

    def rewind(self) -> None:
        self._file.seek(0)
        self._stage = 0
        self._pos = 0

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = len(self)
        size = max(size, UPLOAD_CHUNK)
        out = bytearray()
        while len(out) < size and self._stage < 3:
            if self._stage == 1:
                chunk = self._file.read(size - len(out))
                if chunk:
                    out += chunk
                    continue
                self._stage, self._pos = 2, 0
                continue
            part = self._head if self._stage == 0 else self._tail
            piece = part[self._pos : self._pos + size - len(out)]
            out += piece
            self._pos += len(piece)
            if self._pos >= len(part):
                self._stage, self._pos = self._stage + 1, 0
        return bytes(out)

    def close(self) -> None:
        self._file.close()


def client_from_args(args: Any) -> ApiClient:
    """An :class:`ApiClient` configured from the shared flags and the environment."""
    from doubleword.config import api_key_from_env, base_url_from

    base_url = base_url_from(args)
    key = api_key_from_env()
    return ApiClient(base_url, key)


# The HTTP errors live in doubleword.errors; these names stay importable from here too.
__all__ = [
    "AmbiguousRequest",
    "ApiClient",
    "ApiError",
    "client_from_args",
    "error_message",
    "retry_after_seconds",
]
