"""The export: one row per input, in input order, beside the user's own columns (CSV or JSONL).

Columns: the source row's columns (from ``X.rows.jsonl`` beside each batch file, written by
create_batch_file.py and recorded by submit.py as the shard's ``rows_path``), then ``custom_id``,
``status``, the answer (``content``; or one column per top-level property of a parsed JSON object; or the
``embedding``) and ``error``. A name of ours that clashes with a user column gets a ``dw_`` prefix.

CSV is written for spreadsheets: RFC 4180 quoting (commas, quotes and newlines inside a cell are quoted),
``\\r\\n`` row ends, UTF-8 with a byte-order mark (without it Excel reads UTF-8 as the local code page and
shows emoji and accents as mojibake; LibreOffice, Google Sheets, pandas and ``csv`` with ``utf-8-sig`` all
read it). Cells holding objects or lists are compact JSON. The export is written through a temporary file
of rows (one pass over the results) and then assembled, so the column set can be known first.
"""

from __future__ import annotations

import csv
import io
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from doubleword.batch_inputs import input_key
from doubleword.cli import warn
from doubleword.errors import UsageError
from doubleword.files import atomic_writer
from doubleword.store import FOLDER_FILES

if TYPE_CHECKING:
    from doubleword.manifest import Shard

FORMATS = (".csv", ".jsonl")
SPREADSHEET_CELL = 32_767  # the most characters an Excel cell holds (a longer one is cut or refused)
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def check_path(path: str) -> Path:
    """The export path, refused unless it ends in .csv or .jsonl."""
    target = Path(path)
    if target.suffix.lower() not in FORMATS:
        raise UsageError(f"--export {path}: the file name must end in .csv or .jsonl")
    return target


def check_target(path: Path, manifest: Any, out_dir: Path) -> None:
    """Refuse an export that would overwrite one of the job's own files: its batch, shard or rows files,
    a round's file, the manifest, or anything in the results folder (fetch writes there)."""
    target = path.resolve()
    folder = out_dir.resolve()
    if target == folder or (target.parent == folder and _fetch_writes(target.name)):
        raise UsageError(
            f"--export {path}: that is {target.name} of the results folder {folder}, which fetch writes; "
            "export to another name (e.g. answers.csv)"
        )
    own = {manifest.path.resolve(): "manifest"}
    for entry in manifest.inputs:
        if entry.get("path"):
            own[Path(entry["path"]).resolve()] = "input file"
    for round_ in manifest.rounds:
        if round_.source:
            own[Path(round_.source).resolve()] = "round file"
    for shard in manifest.shards:
        for name, what in ((shard.path, "batch file"), (shard.rows_path or _beside(shard.path), "rows file")):
            if name:
                own.setdefault(Path(name).resolve(), what)
    if target in own:
        raise UsageError(
            f"--export {path}: that is the job's own {own[target]}, which the export would overwrite; "
            "export to another name (e.g. answers.csv or answers.jsonl)"
        )


FETCH_FILES = frozenset({*FOLDER_FILES, "fetch.manifest.json"})


def _fetch_writes(name: str) -> bool:
    """A name fetch keeps in its results folder (the files, hidden index files, fetched input files)."""
    return name in FETCH_FILES or name.startswith(".") or re.fullmatch(r"input-\d+\.jsonl", name) is not None


def _beside(batch_path: str | None) -> str | None:
    """``X.rows.jsonl`` beside a batch file ``X.jsonl`` (contract 1), for a manifest that does not record it."""
    if not batch_path:
        return None
    path = Path(batch_path)
    return str(path.with_name(path.name.removesuffix(".jsonl") + ".rows.jsonl"))


class _Rows:
    """A shard's source rows, read in step with its inputs (joined by custom_id)."""

    def __init__(self, path: str | None, recorded: bool = False) -> None:
        self.lines: Iterator[bytes] | None = None
        self.handle: IO[bytes] | None = None
        if path and Path(path).is_file():
            self.handle = open(path, "rb")  # noqa: SIM115 - closed by close()
            self.lines = iter(self.handle)
        elif path and recorded:  # create wrote it and submit recorded it: moved or deleted since
            warn(
                f"{path} (the source rows create_batch_file.py wrote beside the batch file) is gone: the "
                "export's rows from that file have none of your data's columns; put it back and fetch again"
            )

    def row_for(self, custom_id: str) -> dict[str, Any]:
        if self.lines is None:
            return {}
        for raw in self.lines:  # normally the very next line; rows without an input are skipped
            try:
                entry = json.loads(raw)
            except (ValueError, RecursionError):
                continue
            if isinstance(entry, dict) and entry.get("custom_id") == custom_id:
                row = entry.get("row")
                return row if isinstance(row, dict) else {}
        return {}

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


class Export:
    """A writer (see :mod:`doubleword.results`) that collects the rows, then writes the file on close."""

    def __init__(self, path: Path, store: Any, shards: list[Shard]) -> None:
        self.path = path
        self.rows = {
            input_key(s): _Rows(s.rows_path or _beside(s.path), recorded=bool(s.rows_path)) for s in shards
        }
        self.user_columns: dict[str, None] = {}
        self.answer_columns: dict[str, None] = {}
        self.has_content = self.has_embedding = False
        self.temp = tempfile.TemporaryFile(mode="w+b")  # noqa: SIM115 - closed by close()

    def add(self, result: Any) -> None:
        reader = self.rows.get(str(result.first_batch))
        row = reader.row_for(result.custom_id) if reader is not None else {}
        for key in row:
            if key not in self.user_columns:
                self.user_columns[key] = None
        record = result.record()
        answer: dict[str, Any] = {}
        parsed = record.get("parsed")
        if isinstance(parsed, dict):
            for key in result.properties:  # the schema's order first
                if key not in self.answer_columns:
                    self.answer_columns[key] = None
            for key, value in parsed.items():
                answer[key] = value
                if key not in self.answer_columns:
                    self.answer_columns[key] = None
        elif record.get("embedding") is not None:
            self.has_embedding = True
            answer["embedding"] = record["embedding"]
        if not isinstance(parsed, dict) and (record.get("content") is not None or record.get("tool_calls")):
            self.has_content = True
            answer["content"] = record.get("content")
            if record.get("tool_calls"):
                answer["tool_calls"] = record["tool_calls"]
        error = record.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        entry = [row, result.custom_id, result.status, answer, message]
        self.temp.write(_encode(entry).encode("utf-8") + b"\n")

    def close(self) -> None:
        try:
            self._write()
        finally:
            self.temp.close()
            for reader in self.rows.values():
                reader.close()

    def _columns(self) -> list[tuple[str, str, str]]:
        """(header, where, key): where is "row", "ours" or "answer"."""
        taken = set(self.user_columns)
        columns = [(name, "row", name) for name in self.user_columns]

        def ours(name: str, where: str) -> None:
            header = name if name not in taken else f"dw_{name}"
            taken.add(header)
            columns.append((header, where, name))

        ours("custom_id", "ours")
        ours("status", "ours")
        if self.has_content:
            ours("content", "answer")
        for name in self.answer_columns:
            ours(name, "answer")
        if self.has_embedding:
            ours("embedding", "answer")
        ours("error", "ours")
        return columns

    def _write(self) -> None:
        columns = self._columns()
        self.temp.seek(0)
        csv_out = self.path.suffix.lower() == ".csv"
        with atomic_writer(self.path) as handle:
            text = io.TextIOWrapper(handle, encoding="utf-8-sig" if csv_out else "utf-8", newline="")
            writer = csv.writer(text, lineterminator="\r\n") if csv_out else None
            if writer is not None:
                writer.writerow([header for header, _, _ in columns])
            too_long: int | None = None
            for raw in self.temp:
                row, custom_id, status, answer, message = json.loads(raw)
                ours = {"custom_id": custom_id, "status": status, "error": message}
                values = [
                    row.get(key) if where == "row" else ours[key] if where == "ours" else answer.get(key)
                    for _, where, key in columns
                ]
                if writer is not None:
                    cells = [_cell(v) for v in values]
                    writer.writerow(cells)
                    if too_long is None:
                        too_long = next((len(c) for c in cells if len(c) > SPREADSHEET_CELL), None)
                else:
                    text.write(_encode({h: v for (h, _, _), v in zip(columns, values, strict=True)}) + "\n")
            text.flush()
            text.detach()
        if too_long is not None:
            warn(
                f"{self.path}: a cell holds {too_long:,} characters, more than a spreadsheet cell takes "
                f"({SPREADSHEET_CELL:,} in Excel){' (the embeddings)' if self.has_embedding else ''}; "
                f"export to {self.path.with_suffix('.jsonl').name} instead"
            )


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return _encode(value)
