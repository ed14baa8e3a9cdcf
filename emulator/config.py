"""Emulator settings and defaults, the served models, limits and the price table."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from .catalog import DEFAULT_MODELS, DEFAULT_REASONING_MODELS

BATCH_URLS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses", "/v1/messages")
WINDOWS = {"24h": 24 * 3600, "1h": 3600}
FILE_TTL_S = 30 * 24 * 3600
MAX_BODY_BYTES = 10 * 1024 * 1024
MULTIPART_OVERHEAD = 10 * 1024
DEFAULT_MAX_FILE_BYTES = 200 * 1024 * 1024
DEFAULT_MAX_REQUESTS = 50_000
MAX_CUSTOM_ID_BYTES = 64

# USD per 1M tokens (input, output) by completion window and realtime (references/api_reference.md
# section 10). A model without a realtime price is priced at its 1h rate for an unknown window.
PRICES: dict[str, dict[str, tuple[str, str]]] = {
    "Qwen/Qwen3.5-4B": {"1h": ("0.05", "0.08"), "24h": ("0.04", "0.06")},
    "Qwen/Qwen3.5-9B": {"realtime": ("0.08", "0.70"), "1h": ("0.04", "0.35"), "24h": ("0.03", "0.29")},
    "Qwen/Qwen3-14B-FP8": {"realtime": ("0.05", "0.60"), "1h": ("0.03", "0.30"), "24h": ("0.02", "0.20")},
    "Qwen/Qwen3.5-35B-A3B-FP8": {
        "realtime": ("0.25", "2.00"),
        "1h": ("0.07", "0.30"),
        "24h": ("0.05", "0.20"),
    },
    "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8": {
        "realtime": ("0.16", "0.80"),
        "1h": ("0.07", "0.30"),
        "24h": ("0.05", "0.20"),
    },
    "Qwen/Qwen3-VL-235B-A22B-Instruct-FP8": {
        "realtime": ("0.60", "1.20"),
        "1h": ("0.15", "0.55"),
        "24h": ("0.10", "0.40"),
    },
    "Qwen/Qwen3.5-397B-A17B": {
        "realtime": ("0.60", "3.60"),
        "1h": ("0.30", "1.80"),
        "24h": ("0.15", "1.20"),
    },
    "nvidia/NVIDIA-Nemotron-3-Super-120B-A12B-NVFP4": {
        "realtime": ("0.30", "0.75"),
        "1h": ("0.23", "0.56"),
        "24h": ("0.15", "0.38"),
    },
    "openai/gpt-oss-20b": {"realtime": ("0.04", "0.30"), "1h": ("0.03", "0.20"), "24h": ("0.02", "0.15")},
    "allenai/olmOCR-2-7B-1025-FP8": {"1h": ("0.15", "0.15"), "24h": ("0.10", "0.10")},
    "lightonai/LightOnOCR-2-1B-bbox-soup": {"1h": ("0.08", "0.08"), "24h": ("0.05", "0.05")},
    "Qwen/Qwen3-Embedding-8B": {"realtime": ("0.04", "0"), "1h": ("0.03", "0"), "24h": ("0.02", "0")},
}
FALLBACK_PRICE = {"realtime": ("0.08", "0.60"), "1h": ("0.05", "0.30"), "24h": ("0.03", "0.20")}


@dataclass
class Config:
    """Everything the command line sets; the runtime-tunable part is exposed by /_emulator/config."""

    host: str = "127.0.0.1"
    port: int = 8765
    api_keys: list[str] = field(default_factory=list)
    db: str = ":memory:"
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    reasoning_models: list[str] = field(default_factory=lambda: list(DEFAULT_REASONING_MODELS))
    sloppy_rate: float = 0.0
    # "completion": a tick's requests finish in a random order, as requests running at once do on a real
    # server (references/api_reference.md section 6); "input": in input order
    order: str = "completion"
    rate: float = 5000.0
    start_delay: float = 0.2
    fail_rate: float = 0.0
    fault_rate: float = 0.0
    fault_retry_after: float = 1.0
    seed: int | None = None
    upstream: str | None = None
    upstream_key: str | None = None
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_requests: int = DEFAULT_MAX_REQUESTS
    flavor: str = "doubleword"
    retry_base: float = 0.05
    max_retries: int = 5
    upstream_concurrency: int = 32
    paused: bool = False
    # Injected batch-creation failure: None, "balance" (402) or "capacity" (429).
    batch_create_error: str | None = None
    quiet: bool = False
    # The state file is a scratch file removed on exit (no --db): nothing needs it to survive a crash.
    scratch_db: bool = False

    RUNTIME_KEYS = (
        "rate",
        "fail_rate",
        "fault_rate",
        "start_delay",
        "paused",
        "fault_retry_after",
        "batch_create_error",
        "retry_base",
        "max_retries",
        "sloppy_rate",
        "order",
    )

    def runtime(self) -> dict:
        """The runtime-tunable settings as a JSON-able dict."""
        d = asdict(self)
        return {k: d[k] for k in self.RUNTIME_KEYS}


ORDERS = ("completion", "input")  # the values of Config.order
FRACTIONS = ("fail_rate", "fault_rate", "sloppy_rate")  # shares of requests or calls: 0 to 1


def fraction(value: float) -> float:
    """A share (0 to 1); ValueError otherwise (the same check for the flag and the config endpoint)."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"expected a fraction from 0 to 1, got {value:g}")
    return value


class Clock:
    """Wall-clock seconds plus an offset that tests can advance."""

    def __init__(self, offset: float = 0.0) -> None:
        self.offset = offset

    def now(self) -> float:
        return time.time() + self.offset

    def now_i(self) -> int:
        return int(self.now())
