"""Where requests come from: prompts, a prompts file, CSV or JSONL rows (a column or a template), or a
folder of images with one prompt. Each source yields :class:`SourceRow` items in input order, streaming
(one row at a time; images are only named here and read when their request is built)."""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from doubleword.batchfile import BatchWriter
from doubleword.build import make_request
from doubleword.config import MAX_CUSTOM_ID_BYTES
from doubleword.errors import InputError, UsageError
from doubleword.images import image_files, image_url
from doubleword.validation import custom_id_problems

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([^{}]*)\}")


@dataclass(frozen=True)
class Source:
    """One source of rows, as given on the command line."""

    kind: str  # "prompt", "prompts", "csv", "jsonl" or "images"
    value: Any  # the prompts (list) or the path ("-" for stdin)
    field: str | None = None  # the prompt column
    template: str | None = None  # or a template over the columns
    id_field: str | None = None
    image_fields: tuple[str, ...] = ()  # columns holding an image path or URL (blank cells skipped)
    prompt: str = ""  # the one prompt of an images folder

    @property
    def base(self) -> Path:
        """The folder that relative image paths are relative to: the data file's own."""
        if not isinstance(self.value, str) or self.value == "-":
            return Path.cwd()
        return Path(self.value).resolve().parent


@dataclass(frozen=True)
class SourceRow:
    """One input row: where it is (for messages), its prompt, what the rows file records for it."""

    where: str
    prompt: Any  # text, or a list (messages / inputs) from a JSONL column
    row: dict[str, Any]
    empty: bool  # a blank prompt (field or every template value), and no image
    id_value: str | None = None  # from --id-field
    images: list[str] = field(default_factory=list)  # paths or URLs, as given


def absolute(path: str | None) -> str | None:
    """``path`` made absolute (its folder resolved, its own name kept: a symlink stays the link the user
    named), so that stdout and every message name the same file from any folder; None and ``-`` (stdin)
    as they are."""
    if path is None or path == "-":
        return path
    given = Path(path)
    return str(given.parent.resolve() / given.name) if given.name not in ("", "..") else str(given.resolve())


def read_rows(source: Source) -> Iterator[SourceRow]:
    """The rows of ``source`` in input order."""
    if source.kind == "prompt":
        for number, prompt in enumerate(source.value, 1):
            yield SourceRow(f"--prompt number {number}", prompt, {"prompt": prompt}, not prompt.strip())
    elif source.kind == "prompts":
        with _open_text(source.value, "--prompts", newline="\n") as handle:
            for lineno, line in enumerate(_lines(handle, "--prompts", source.value), 1):
                text = line.rstrip("\r\n")
                if text.strip():  # blank lines separate prompts; they are not prompts
                    yield SourceRow(f"line {lineno} of {source.value}", text, {"prompt": text}, False)
    elif source.kind == "images":
        for path in image_files(source.value):
            yield SourceRow(
                f"image {path.name}",
                source.prompt,
                {"image": path.name, "prompt": source.prompt},
                False,
                id_value=path.name,
                images=[str(path)],
            )
    else:
        reader = _csv_rows if source.kind == "csv" else _jsonl_rows
        for where, row in reader(source.value):
            yield _tabular_row(source, where, row)


SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".ods", ".numbers"})


def _csv_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path, "--csv", newline="") as handle:
        held: list[list[str]] = [[]]  # the physical lines of the record being read

        def lines() -> Iterator[str]:
            for line in handle:
                held[0].append(line)
                yield line

        reader = csv.DictReader(lines())
        try:
            _comma_separated(path, reader.fieldnames)
            held[0] = []  # the header's lines
            last: list[str] = []
            number = 0
            for number, row in enumerate(reader, 1):
                last, held[0] = held[0], []
                if len(last) > 1:  # a quoted value over several lines: check its quotes as it is read
                    _closed_inside_a_value(path, number, reader.line_num, last)
                where = f"row {number} (line {reader.line_num}) of {path}"
                if None in row:
                    raise InputError(f"{where} has more values than the header has columns")
                if None in row.values():  # a short row: its missing values are empty, as in a spreadsheet
                    row = {key: "" if value is None else value for key, value in row.items()}
                yield where, row
            _never_closed(path, number, reader.line_num, last)
        except csv.Error as exc:
            raise InputError(f"{path}: not readable as CSV near line {reader.line_num}: {exc}")
        except UnicodeDecodeError:
            if Path(path).suffix.lower() in SPREADSHEET_SUFFIXES:
                raise InputError(f"{path} is a spreadsheet workbook, not CSV: save it as CSV (UTF-8) first")
            raise InputError(f"{path} is not valid UTF-8; re-save it as UTF-8")


def _never_closed(path: str, number: int, line_num: int, record: list[str]) -> None:
    """Refuse a last row whose quoted value is never closed: the CSV reader (lenient, as spreadsheets
    are) runs it to the end of the file, so every row after it would silently become part of its text."""
    if not record:
        return
    try:
        list(csv.reader(record, strict=True))
    except csv.Error as exc:
        if "unexpected end of data" not in str(exc):
            return  # another oddity (a stray quote inside a value) that the lenient reader took as text
        start = line_num - len(record) + 1
        taken = f", taking in the {len(record) - 1} line(s) after it" if len(record) > 1 else ""
        raise InputError(
            f"row {number} (line {start}) of {path} opens a quoted value that is never closed, so it runs to "
            f'the end of the file{taken}; fix the quotes of that row (a value holding a " is written in '
            'quotes, with the " doubled: "5"" screen")'
        )


def _closed_inside_a_value(path: str, number: int, line_num: int, record: list[str]) -> None:
    """Refuse a row read over several lines whose quoted value is closed by a quote inside a later value
    (a stray opening quote, then `5" screen` rows below): the lenient reader takes every line between
    them as that row's text, and goes on after it as if nothing were wrong (rows lost, with --limit too)."""
    try:
        list(csv.reader(record, strict=True))
    except csv.Error as exc:
        if "expected after" not in str(exc):
            return
        start = line_num - len(record) + 1
        raise InputError(
            f"row {number} (line {start}) of {path} opens a quoted value that is closed only by a quote inside "
            f"a value on line {line_num}, so the {len(record) - 1} line(s) after it were read as that row's "
            'text; fix the quotes of that row (a value holding a " is written in quotes, with the " '
            'doubled: "5"" screen")'
        ) from None


def _comma_separated(path: str, header: Any) -> None:
    """Refuse a header that reads as one column holding another separator (a ';' CSV from a spreadsheet
    set to a European locale, or a tab-separated file), which would otherwise fail later as a missing column;
    and one naming a column twice, whose second values would silently replace the first's."""
    seen: dict[str, int] = {}
    for number, name in enumerate(header or (), 1):
        if name.strip() and seen.setdefault(name, number) != number:
            raise InputError(
                f"{path}: its header names column {name!r} twice (columns {seen[name]} and {number}); rename "
                "one: the later one's values would replace the first's"
            )
    if header and len(header) == 1:
        sep = next((s for s in (";", "\t", "|") if s in header[0]), None)
        if sep is not None:
            name = "tab" if sep == "\t" else repr(sep)
            raise InputError(
                f"{path}: its header {header[0]!r} reads as a single column: the file looks {name}-separated, "
                "and --csv reads comma-separated files; save it as comma-separated CSV (or as JSONL for --jsonl)"
            )


def _jsonl_rows(path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    with _open_text(path, "--jsonl", newline="\n") as handle:
        for lineno, line in enumerate(_lines(handle, "--jsonl", path), 1):
            if not line.strip():
                continue
            where = f"line {lineno} of {path}"
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise InputError(f"{where} is not valid JSON ({exc})")
            if not isinstance(row, dict):
                raise InputError(f"{where} is not a JSON object")
            yield where, row


def _tabular_row(source: Source, where: str, row: dict[str, Any]) -> SourceRow:
    if source.field:
        prompt = _column_prompt(row, source.field, where)
        empty = isinstance(prompt, str) and not prompt.strip()
    else:
        prompt, empty = _fill(str(source.template), row, where)
    images: list[str] = []
    for name in source.image_fields:
        cell = _column(row, name, where)
        for value in cell if isinstance(cell, list) else [cell]:  # a JSONL list: several images
            if value is not None and str(value).strip():
                images.append(value if isinstance(value, str) else json.dumps(value))
    if source.image_fields:
        if not images:
            columns = ", ".join(repr(n) for n in source.image_fields)
            raise InputError(f"{where}: no image in {columns}; give a file path or an http(s) URL")
        empty = False
    id_value = None
    if source.id_field:
        if source.id_field not in row:
            raise InputError(
                f"{where}: the id column {source.id_field!r} is missing; columns are: {', '.join(map(str, row))}"
            )
        if row[source.id_field] in (None, ""):
            raise InputError(
                f"{where}: the id column {source.id_field!r} is empty; give every row an id, or leave out "
                "--id-field to number the requests"
            )
        value = row[source.id_field]
        id_value = value if isinstance(value, str) else json.dumps(value)
    return SourceRow(where, prompt, row, empty, id_value, images)


def _column(row: dict[str, Any], name: str, where: str) -> Any:
    if name not in row:
        raise InputError(f"{where}: column {name!r} is missing; columns are: {', '.join(map(str, row))}")
    return row[name]


def _column_prompt(row: dict[str, Any], name: str, where: str) -> Any:
    value = _column(row, name, where)
    if isinstance(value, list) and value:
        return value
    if value is None or isinstance(value, (dict, list)):
        raise InputError(f"{where}: column {name!r} is {json.dumps(value)}, not a prompt")
    return value if isinstance(value, str) else json.dumps(value)


def _fill(template: str, row: dict[str, Any], where: str) -> tuple[str, bool]:
    """The filled template, and whether every value it used is blank (an empty prompt)."""
    used: list[str] = []

    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in row:
            literal = not name.strip() or any(c in name for c in "\"':,{}")  # JSON or code, not a column
            raise InputError(
                f"{where}: the template uses {{{name}}} but the row has no column {name!r}; "
                f"columns are: {', '.join(map(str, row))}"
                + ('; write literal braces doubled, {{ and }} (e.g. {{"label": ...}})' if literal else "")
            )
        value = row[name]
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        used.append(text if value is not None else "")
        return text

    filled = _PLACEHOLDER.sub(fill, template)
    return filled, bool(used) and not any(v.strip() for v in used)


def _open_text(path: str, flag: str, newline: str | None = None) -> Any:
    if path == "-":
        return io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8-sig", newline=newline)
    try:
        return open(path, encoding="utf-8-sig", newline=newline)  # noqa: SIM115 - closed by the caller
    except OSError as exc:
        raise InputError(f"{flag} {path}: cannot open it ({exc.strerror})")


def _lines(handle: Any, flag: str, path: str) -> Iterator[str]:
    try:
        yield from handle
    except UnicodeDecodeError:
        raise InputError(f"{flag} {path} is not valid UTF-8; re-save it as UTF-8")


# --------------------------------------------------------------------------- rows -> batch file


@dataclass
class BuildReport:
    """What :func:`build_batch` wrote and met on the way."""

    shards: list[dict[str, Any]]
    empty: int = 0  # rows with an empty prompt (sent, or left out with skip_empty)
    empty_rows: list[str] = field(default_factory=list)  # the first few of them
    skipped_empty: int = 0
    skipped_duplicates: int = 0
    renamed_duplicates: int = 0

    def summary(self, *, skip_empty: bool, duplicates: str) -> tuple[dict[str, Any], list[str]]:
        """The stdout members (counts that the options asked for, empty prompts) and warning notes."""
        fields: dict[str, Any] = {}
        notes = []
        if self.empty:
            action = (
                "left out (--skip-empty)" if skip_empty else "sent as they are; --skip-empty leaves them out"
            )
            first = "; ".join(self.empty_rows)
            notes.append(f"empty: {self.empty} empty prompt(s), first: {first}; {action}")
            fields["empty_prompts"] = {"count": self.empty, "first": self.empty_rows}
        if skip_empty:
            fields["skipped_empty"] = self.skipped_empty
        if duplicates == "skip":
            fields["skipped_duplicates"] = self.skipped_duplicates
        if duplicates == "number":
            fields["renamed_duplicates"] = self.renamed_duplicates
        return fields, notes


def build_batch(
    source: Source,
    out_path: str,
    request_options: dict[str, Any],
    *,
    id_prefix: str = "req",
    limit: int | None = None,
    skip_empty: bool = False,
    duplicates: str = "error",
    max_requests: int,
    max_bytes: int,
) -> BuildReport:
    """Build and write the batch file(s) of ``source``: one request per row (``request_options`` are
    :func:`make_request`'s keyword arguments, model and endpoint included), the rows files beside them,
    images encoded one at a time. Nothing is left behind on error."""
    report = BuildReport(shards=[])
    base = source.base
    with BatchWriter(
        out_path, max_requests=max_requests, max_bytes=max_bytes, rows=True, duplicates=duplicates
    ) as writer:
        for number, item in enumerate(read_rows(source), 1):
            if limit is not None and number > limit:
                break
            if item.empty:
                report.empty += 1
                if len(report.empty_rows) < _FIRST_ROWS:
                    report.empty_rows.append(item.where)
                if skip_empty:
                    report.skipped_empty += 1
                    continue
            custom_id = item.id_value if item.id_value is not None else f"{id_prefix}-{number:05d}"
            images = [image_url(value, base, item.where) for value in item.images] or None
            request = make_request(item.prompt, custom_id=custom_id, images=images, **request_options)
            writer.add(request, item.row, item.where)
        if writer.number == 0 and report.skipped_empty:
            raise InputError(
                f"every row ({report.skipped_empty}) has an empty prompt; --skip-empty left them all out"
            )
        report.shards = writer.finish()
        report.skipped_duplicates, report.renamed_duplicates = writer.skipped, writer.renamed
    return report


_FIRST_ROWS = 5


def parse_set(items: list[str]) -> dict[str, Any]:
    """``--set KEY=JSON`` items as body fields."""
    extra: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set {item!r}: expected KEY=JSON, e.g. --set seed=42")
        try:
            extra[key.strip()] = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"--set {key}: the value {raw!r} is not JSON ({exc.msg}); strings need JSON quotes, "
                f"e.g. --set '{key}=\"text\"'"
            )
    return extra


def read_json_schema(path: str) -> dict[str, Any]:
    """The JSON Schema of ``--json-schema FILE`` (a bare schema, OpenAI's {"name", "schema"} shape, or a
    whole ``response_format`` holding one), checked against its metaschema: a broken schema would only
    fail later, on the server or at fetch."""
    try:
        with open(path, encoding="utf-8") as handle:
            schema = json.load(handle)
    except OSError as exc:
        raise InputError(f"--json-schema {path}: cannot read it ({exc.strerror})")
    except RecursionError:
        raise InputError(f"--json-schema {path}: nested too deeply to read; flatten the schema ($defs, $ref)")
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError(f"--json-schema {path}: not valid JSON ({exc})")
    if not isinstance(schema, dict):
        raise InputError(f"--json-schema {path}: must hold a JSON object (a JSON Schema)")
    if schema.get("type") == "json_schema" and isinstance(schema.get("json_schema"), dict):
        schema = schema["json_schema"]  # a whole response_format, copied from a request: its json_schema
    wrapped = isinstance(schema.get("schema"), dict) and "name" in schema
    problem = _schema_problem(schema["schema"] if wrapped else schema)
    if problem:
        raise InputError(f"--json-schema {path}: not a valid JSON Schema: {problem}")
    return schema


def _schema_problem(schema: dict[str, Any]) -> str | None:
    """Why ``schema`` breaks its metaschema (draft by ``$schema``, else the latest), or None."""
    from jsonschema.exceptions import SchemaError
    from jsonschema.validators import validator_for

    try:
        validator_for(schema).check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(part) for part in exc.path)
        return f"{exc.message} (at {'/' + where if where else 'the top level'})"
    except RecursionError:
        return "nested too deeply; flatten it ($defs, $ref)"
    return None


def source_from_args(args: Any) -> Source:
    """The Source that create_batch_file.py's flags name (check_source_args has checked them)."""
    kind = next(k for k in ("images", "prompts", "csv", "jsonl", "prompt") if getattr(args, k))
    if kind == "images":
        return Source("images", args.images, prompt=(args.prompt or [""])[0])
    return Source(
        kind,
        getattr(args, kind),
        field=args.field,
        template=args.template,
        id_field=args.id_field,
        image_fields=tuple(args.image_field or ()),
    )


def check_source_args(args: Any) -> None:
    """create_batch_file.py's flags that cannot go together, refused before any input is read."""
    kinds = [name for name in ("prompt", "prompts", "csv", "jsonl", "images") if getattr(args, name)]
    if args.images and kinds == ["prompt", "images"]:
        kinds = ["images"]
        if len(args.prompt) > 1:
            raise UsageError("--images takes one --prompt (the same prompt for every image)")
    if len(kinds) != 1:
        raise UsageError("give exactly one source kind: --prompt, --prompts, --csv, --jsonl or --images")
    tabular = kinds[0] in ("csv", "jsonl")
    if tabular and bool(args.field) == bool(args.template):
        raise UsageError(f"--{kinds[0]} needs exactly one of --field NAME or --template TEXT")
    if not tabular and (args.field or args.template or args.id_field or args.image_field):
        raise UsageError("--field, --template, --id-field and --image-field apply only to --csv and --jsonl")
    if args.limit is not None and args.limit < 1:
        raise UsageError("--limit must be >= 1")
    if args.max_requests < 1 or args.max_bytes < 1024:
        raise UsageError("--max-requests must be >= 1 and --max-bytes >= 1024")
    if len(args.id_prefix.encode("utf-8")) > MAX_CUSTOM_ID_BYTES - 6 or custom_id_problems(args.id_prefix):
        raise UsageError("--id-prefix must be short (at most 58 bytes) and free of control characters")
