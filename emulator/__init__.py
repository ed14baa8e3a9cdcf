"""A local emulator of Doubleword's OpenAI-compatible batch API (``python -m emulator``).

It reproduces the real server's observable behaviour as described in ``doubleword-api.md``: upload-time
validation with exact error texts, bare-UUID ids, batch status rules, paged content with
``X-Incomplete``/``X-Last-Line``, plain-text error bodies, and a deterministic built-in model.
"""
