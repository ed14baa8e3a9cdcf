"""Answers made at upload. A plain chat request's output line is fixed by the request itself, but for the
two values its run gives it (the row's request id, twice, and the time it ran). The upload, which parses
every line anyway, makes the rest once (`prepare`); running such a request is then one row update in SQL
among a range of them (store/work.py), and its line is put together when it is read (`LINE_SQL`). Answering
and storing each line during the run cost the server about 35 us and a helper process 23 us of CPU per
request: 24,000 requests/s on this 2-core machine, against the 50,000 a scale test asks for. Every other
request, and every request while failures or the sloppy model are on, is answered by `Model.answer` when
it runs, and the line is stored. Both give the same line, byte for byte
(tests/emulator/test_prepared_answers.py)."""

from __future__ import annotations

from .model import Model
from .responses import json_string

ID_HEAD = '{"id":"batch_req_'
BODY_ID = ',"id":"chatcmpl-'
NOT_PREPARED = (None, None, None, None)

# The line served for a `requests` row: its own line, else its prepared one put together (coalesce reads
# the input line only for a row with no line of its own: a completed, prepared one; pending rows are never
# read). One parameter: the id of the batch's input file.
LINE_SQL = (
    "coalesce(line, (SELECT '" + ID_HEAD + "' || requests.id || p.prepared_head"
    " || CAST(requests.done_at AS INTEGER) || '" + BODY_ID + "' || replace(requests.id, '-', '')"
    " || p.prepared_tail FROM input_lines p WHERE p.file_id=? AND p.line_no=requests.line_no))"
)


def plain_output_line(req_id: str, custom_id: str, status: int, body: str) -> str:
    """An output line around a body already in its sorted compact JSON form (references/api_reference.md
    section 5: keys id, custom_id, response{status_code, request_id: null, body}, error: null)."""
    return (
        f'{ID_HEAD}{req_id}","custom_id":{json_string(custom_id)},"response":{{"status_code":'
        f'{status},"request_id":null,"body":{body}}},"error":null}}'
    )


def prepare(
    model: Model, custom_id: str, url: str, body: dict
) -> tuple[str, str, int, int] | tuple[None, None, None, None]:
    """(head, tail, prompt tokens, completion tokens) of the request's output line, as `assemble` and
    `LINE_SQL` complete it; NOT_PREPARED for a request the fast path does not answer. `body` is the
    body as stored (without `priority`)."""
    parts = model.plain_parts(url, body)
    if parts is None:
        return NOT_PREPARED
    head, tail, pt, ct = parts
    line_head = (
        f'","custom_id":{json_string(custom_id)},"response":{{"status_code":200,"request_id":null,"body":'
        f"{head}"
    )
    return line_head, f'{tail}}},"error":null}}', pt, ct


def assemble(req_id: str, created: int, head: str, tail: str) -> str:
    """The line `LINE_SQL` puts together, in Python (for tests)."""
    return f"{ID_HEAD}{req_id}{head}{created}{BODY_ID}{req_id.replace('-', '')}{tail}"
