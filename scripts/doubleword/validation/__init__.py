"""Local validation of batch input files against references/schemas/ and the file-level rules.

The JSON Schemas are the single source of truth. Running jsonschema on every line would be far too slow for
50,000-line files, so each endpoint gets a checker derived from its schema, with hand-written fast checks for
the hot paths (tests compare them with the schema on generated bodies); anything the fast path does not
accept goes through the full schema, which gives the detailed messages.

    fast.py     the fast checks (schema-derived predicates, messages, text input, image parts)
    schemas.py  loading and compiling the schemas; the per-endpoint checker (fast path + full schema)
    lines.py    one line: envelope, body, the server's reasoning rules, images; the shared fast line check
    scan.py     a whole file: block reading, the file rules, the report

Public API:
    validate_batch_file(path, *, max_errors=20, max_bytes=..., max_requests=...) -> report dict
    validate_line(obj) -> list of problems ({"severity", "code", "message"})
    inspect_line(obj) -> (errors, warnings, prompt characters)
    ERROR_CODES, WARNING_CODES, MAX_BODY_BYTES
"""

from doubleword.validation.lines import (
    ERROR_CODES,
    MAX_BODY_BYTES,
    WARNING_CODES,
    custom_id_problems,
    inspect_line,
    plain_line,
    validate_line,
)
from doubleword.validation.scan import invalid_summary, validate_batch_file
from doubleword.validation.schemas import SCHEMA_FILES, endpoint_checker

__all__ = [
    "ERROR_CODES",
    "MAX_BODY_BYTES",
    "SCHEMA_FILES",
    "WARNING_CODES",
    "custom_id_problems",
    "endpoint_checker",
    "inspect_line",
    "invalid_summary",
    "plain_line",
    "validate_batch_file",
    "validate_line",
]
