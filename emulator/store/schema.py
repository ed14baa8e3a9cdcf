"""The SQLite tables behind the Store, and the small id helpers every table uses."""

from __future__ import annotations

import uuid

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,              -- input | output | error
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    expires_at INTEGER,
    batch_id TEXT,
    lines INTEGER NOT NULL DEFAULT 0,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS input_lines (
    file_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    method TEXT NOT NULL,
    url TEXT NOT NULL,
    model TEXT NOT NULL,
    body TEXT NOT NULL,
    -- a plain chat request's answer, made at upload (emulator/prepared.py); NULL for any other request
    prepared_head TEXT,
    prepared_tail TEXT,
    prepared_prompt_tokens INTEGER,
    prepared_completion_tokens INTEGER,
    PRIMARY KEY (file_id, line_no)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    owner TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    input_file_id TEXT NOT NULL,
    input_filename TEXT NOT NULL,
    completion_window TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    in_progress_at INTEGER,
    finalizing_at INTEGER,
    completed_at INTEGER,
    failed_at INTEGER,
    cancelling_at INTEGER,
    cancelled_at INTEGER,
    finished_at REAL,
    start_after REAL NOT NULL DEFAULT 0,
    expired INTEGER NOT NULL DEFAULT 0,  -- OpenAI flavour only: deadline passed, leftovers written off
    output_file_id TEXT,
    error_file_id TEXT,
    metadata TEXT NOT NULL,
    total INTEGER NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    rid INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    custom_id TEXT NOT NULL,
    model TEXT NOT NULL,
    url TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL,             -- pending | in_progress | completed | failed
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    done_seq INTEGER,
    done_at REAL,
    line TEXT,                       -- the output or error line, as served; NULL when completed as prepared
    prompt_tokens INTEGER NOT NULL DEFAULT 0,   -- counted once completed
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    duration_ms REAL,
    prepared INTEGER NOT NULL DEFAULT 0  -- its input line holds a prepared answer (and the tokens above)
);
CREATE INDEX IF NOT EXISTS requests_by_state ON requests (batch_id, state, done_seq);
-- pending rows are found through requests_by_state (their done_seq is NULL, so it is in rid order):
-- one index fewer to update per finished request
DROP INDEX IF EXISTS requests_pending;
CREATE INDEX IF NOT EXISTS requests_by_line ON requests (batch_id, line_no);
CREATE UNIQUE INDEX IF NOT EXISTS requests_by_id ON requests (id);
"""

# Columns added since a --db file may have been made: (table, column, type), added when missing.
ADDED_COLUMNS = (
    ("input_lines", "prepared_head", "TEXT"),
    ("input_lines", "prepared_tail", "TEXT"),
    ("input_lines", "prepared_prompt_tokens", "INTEGER"),
    ("input_lines", "prepared_completion_tokens", "INTEGER"),
    ("requests", "prepared", "INTEGER NOT NULL DEFAULT 0"),
)

TERMINAL = ("completed", "failed", "cancelled", "expired")


def new_id() -> str:
    return str(uuid.uuid4())


def owner_email(owner: str) -> str:
    """The creator address shown on objects (the emulator knows keys, not people)."""
    return f"user-{owner[:8]}@example.com"
