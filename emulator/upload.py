"""`POST /files`: the multipart upload, streamed and checked line by line in the server's order
(references/api_reference.md section 3), spooled to a temporary file, then stored in one transaction."""

from __future__ import annotations

import logging
import marshal
import re
import tempfile
from collections.abc import Iterator
from functools import partial
from typing import IO

from aiohttp import BodyPartReader, MultipartReader, hdrs, web
from aiohttp.helpers import parse_mimetype
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy

from .config import FILE_TTL_S, MULTIPART_OVERHEAD
from .prepared import prepare
from .responses import json_ok, text_error
from .state import State, state_of
from .store import new_id
from .validation import LineValidator, UploadError

CHUNK = 256 * 1024
INTEGER = re.compile(r"[+-]?[0-9]+")
I64 = (-(2**63), 2**63 - 1)  # the server parses expires_after[seconds] as an i64 (anything else: ignored)
# What a broken multipart stream raises in aiohttp: bad part headers (HttpProcessingError: no colon, too
# long, too many), an unknown charset (LookupError), bad bytes or framing (ValueError, RuntimeError,
# AssertionError), a body that ends early (EOFError).
REASON_CHARS = 200  # a reason quoting an 8 KB header line is cut
MULTIPART_ERRORS = (ValueError, AssertionError, RuntimeError, LookupError, EOFError, HttpProcessingError)
log = logging.getLogger("emulator.files")


def too_big(limit: int) -> UploadError:
    return UploadError(413, f"File exceeds the maximum allowed size of {limit} bytes")


class Upload:
    """The fields of one upload as they arrive."""

    def __init__(self, state: State) -> None:
        self.purpose: str | None = None
        self.expires_after: int | None = None
        self.filename: str | None = None
        self.size = 0
        self.have_file = False
        self.validator = LineValidator(
            state.model.catalog, state.cfg.max_requests, partial(prepare, state.model)
        )


async def upload(request: web.Request) -> web.Response:
    state = state_of(request)
    owner = state.auth_files(request)
    limit = state.cfg.max_file_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_OVERHEAD:
        return text_error(413, f"File exceeds the maximum allowed size of {limit} bytes")
    if not request.content_type.startswith("multipart/"):
        return text_error(
            400, "Invalid multipart request: Invalid `boundary` for `multipart/form-data` request"
        )
    with tempfile.TemporaryFile() as spool:
        try:
            up = await read_upload(request, state, spool)
        except UploadError as exc:
            return text_error(exc.status, exc.message)
        except ConnectionResetError:  # the client went away mid-upload: nothing was stored
            log.info("upload abandoned by the client; nothing stored")
            return text_error(400, "Failed to read multipart upload: connection lost")
        spool.seek(0)
        now = state.clock.now_i()
        f = state.store.add_input_file(
            new_id(),
            owner,
            up.size,
            up.filename or f"upload-{new_id()}",
            up.purpose or "",  # stored as sent (none when omitted); shown lower case
            now + (up.expires_after if up.expires_after is not None else FILE_TTL_S),
            spooled_rows(spool, up.validator.count),
            up.validator.count,
        )
    state.files_created += 1
    return json_ok(state.store.file_object(f, full=False), 200 if state.openai else 201)


class FlatMultipartReader(MultipartReader):
    """A part whose own Content-Type is multipart is read as bytes, like any other part (the server's
    parser does not descend into nested multipart: a nested "file" part is then invalid JSON)."""

    def _get_part_reader(self, headers: CIMultiDictProxy[str]) -> MultipartReader | BodyPartReader:
        if parse_mimetype(headers.get(hdrs.CONTENT_TYPE, "")).type == "multipart":
            flat = CIMultiDict(headers)
            flat[hdrs.CONTENT_TYPE] = "application/octet-stream"
            headers = CIMultiDictProxy(flat)
        return super()._get_part_reader(headers)


def problem(exc: BaseException) -> str:
    """The reason shown after "Failed to read multipart upload: " (aiohttp's HTTP errors print their
    status and headers in str())."""
    text = (exc.message if isinstance(exc, HttpProcessingError) else str(exc)) or type(exc).__name__
    return text if len(text) <= REASON_CHARS else text[: REASON_CHARS - 3] + "..."


async def read_upload(request: web.Request, state: State, spool: IO[bytes]) -> Upload:
    """Read every part; the file part is validated while it streams in. Raises UploadError."""
    up = Upload(state)
    started = False  # a break after the first part is a read failure, not a malformed request
    try:
        reader = await request.multipart()
        reader.__class__ = FlatMultipartReader
        while True:
            part = await reader.next()
            if part is None:
                break
            started = True
            await read_part(part, up, spool, state.cfg.max_file_bytes)  # type: ignore[arg-type]
    except UploadError:
        raise
    except MULTIPART_ERRORS as exc:
        if started:
            raise UploadError(400, f"Failed to read multipart upload: {problem(exc)}")
        raise UploadError(400, f"Invalid multipart request: {problem(exc)}")
    if not up.have_file:
        raise UploadError(400, "No file field found in multipart upload")
    if up.validator.count == 0:
        raise UploadError(400, "File contains no valid request templates")
    return up


async def read_part(part: BodyPartReader, up: Upload, spool: IO[bytes], limit: int) -> None:
    name = part.name
    if name == "purpose":
        up.purpose = (await part.text()).strip()
        if up.purpose.lower() != "batch":
            raise UploadError(400, f"Invalid purpose '{up.purpose}'. Only 'batch' is supported.")
    elif name == "expires_after[seconds]":
        raw = (await part.text()).strip()
        # anything else is ignored, the 30-day default applies (so does a deadline past what an i64 holds)
        if INTEGER.fullmatch(raw) and I64[0] <= int(raw) <= I64[1] - 2**40:
            up.expires_after = int(raw)
    elif name == "file" and not up.have_file:
        up.have_file = True
        up.filename = part.filename
        up.size = await read_file_part(part, up.validator, spool, limit)
    else:
        await part.release()


async def read_file_part(part: BodyPartReader, validator: LineValidator, spool: IO[bytes], limit: int) -> int:
    """Stream the file part: split lines, validate each as it arrives, spool the validated rows."""
    size = 0
    pending = b""
    line_start = 0  # byte offset of `pending` in the file
    while True:
        chunk = await part.read_chunk(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > limit:
            raise too_big(limit)
        pending += chunk
        start = 0
        while True:
            nl = pending.find(b"\n", start)
            if nl < 0:
                break
            spool_row(validator, pending[start:nl], line_start + start, spool)
            start = nl + 1
        pending = pending[start:]
        line_start += start
    if pending:
        spool_row(validator, pending, line_start, spool)
    return size


def spool_row(validator: LineValidator, raw: bytes, offset: int, spool: IO[bytes]) -> None:
    row = validator.check(raw, offset)
    if row is not None:
        # marshal, not JSON: re-encoding each (already validated) body cost a third of the upload time
        marshal.dump(row, spool)


def spooled_rows(spool: IO[bytes], count: int) -> Iterator[tuple]:
    for _ in range(count):
        yield marshal.load(spool)
