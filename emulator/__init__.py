"""A local emulator of Doubleword's OpenAI-compatible batch API (``python -m emulator``).

It reproduces the real server's observable behaviour as ``references/api_reference.md`` describes it:
upload-time validation with exact error texts (section 3), bare-UUID ids and objects (4), output and
error lines (5), batch status rules (6), paged content with ``X-Incomplete``/``X-Last-Line`` (7), lists
(8), plain-text error bodies (9), and a deterministic built-in model.

Layout: ``__main__`` (command line) -> ``app`` (middleware, routes) -> ``files_api``/``upload``,
``batches_api``, ``inference_api`` and ``control`` (handlers) -> ``state`` (what handlers share) ->
``store`` (all SQL), ``worker`` (background processing) -> ``model`` (built-in model) or ``upstream``;
``prepared`` makes plain answers at upload and puts their lines together when read.
``responses`` holds the response helpers; ``launcher`` starts the emulator as a subprocess.

Test-control endpoints (unauthenticated, never faulted, not logged):

- ``GET /_emulator/requests``: ``{"requests": [{"method", "path", "query", "status", "fault"}, ...]}``, every
  API call in order (``status`` is null for a dropped connection; ``fault`` null or the injected kind).
- ``GET /_emulator/stats``: ``{"files_created", "batches_created", "api_calls", "faults_injected",
  "prepared_answers"}`` (``prepared_answers``: batch requests completed with the answer made at upload,
  see prepared.py).
- ``GET|POST /_emulator/config``: read or change ``rate``, ``fail_rate``, ``fault_rate``, ``start_delay``,
  ``paused``, ``fault_retry_after``, ``batch_create_error`` (null, ``"balance"`` -> 402, ``"capacity"`` ->
  429), ``retry_base``, ``max_retries``; returns the full runtime config. ``fail_rate`` is ``--fail-rate``:
  its 400s and 422s follow the request (custom_id and body), so the same request is refused again in any
  later batch; its 500s are drawn per batch row (``worker.Worker.forced_status``).
- ``POST /_emulator/clock`` ``{"advance_seconds": N}``: moves the emulator's clock forward.

Built-in model hooks for tests (extra keys in a request body, not part of any real API):
``"x_emulator_status": N`` answers HTTP N (e.g. 400, 429, 503); with ``"x_emulator_fail_times": k`` only
the first k attempts fail, then the request succeeds.
"""
