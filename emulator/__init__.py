"""A local emulator of Doubleword's OpenAI-compatible batch API (``python -m emulator``).

It reproduces the real server's observable behaviour as described in ``doubleword-api.md``: upload-time
validation with exact error texts, bare-UUID ids, batch status rules, paged content with
``X-Incomplete``/``X-Last-Line``, plain-text error bodies, and a deterministic built-in model.

Test-control endpoints (unauthenticated, never faulted, not logged):

- ``GET /_emulator/requests``: ``{"requests": [{"method", "path", "query", "status", "fault"}, ...]}``, every
  API call in order (``status`` is null for a dropped connection; ``fault`` null or the injected kind).
- ``GET /_emulator/stats``: ``{"files_created", "batches_created", "api_calls", "faults_injected"}``.
- ``GET|POST /_emulator/config``: read or change ``rate``, ``fail_rate``, ``fault_rate``, ``start_delay``,
  ``paused``, ``fault_retry_after``, ``batch_create_error`` (null, ``"balance"`` -> 402, ``"capacity"`` ->
  429), ``retry_base``, ``max_retries``; returns the full runtime config.
- ``POST /_emulator/clock`` ``{"advance_seconds": N}``: moves the emulator's clock forward.

Built-in model hooks for tests (extra keys in a request body, not part of any real API):
``"x_emulator_status": N`` answers HTTP N (e.g. 400, 429, 503); with ``"x_emulator_fail_times": k`` only
the first k attempts fail, then the request succeeds.
"""
