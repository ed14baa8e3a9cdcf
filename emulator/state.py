"""What every handler shares: the configuration, clock, store, worker, fault picker and call log, kept on
the aiohttp application under `STATE`, plus the two ways the server authenticates a key."""

from __future__ import annotations

import hashlib

from aiohttp import web

from .config import Clock, Config
from .faults import Faults
from .model import Model
from .responses import Reject, openai_error, text_error
from .store import Store
from .upstream import Upstream
from .worker import Worker


class State:
    """Everything a handler needs, stored on the app under STATE."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.clock = Clock()
        self.store = Store(cfg.db, self.clock, cfg.flavor, durable=not cfg.scratch_db)
        self.upstream = Upstream(cfg.upstream, cfg.upstream_key) if cfg.upstream else None
        self.model = Model(cfg)
        self.worker = Worker(self.store, cfg, self.model, self.upstream)
        self.faults = Faults(cfg.seed)
        self.calls: list[dict] = []
        self.files_created = 0
        self.batches_created = 0
        self.seen_bodies: dict[str, int] = {}

    @property
    def openai(self) -> bool:
        return self.cfg.flavor == "openai"

    def owner_for_key(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    def auth_files(self, request: web.Request) -> str:
        """Files/batches routes: exactly `Bearer <key>`, else 401 plain text. Returns the owner."""
        header = request.headers.get("Authorization", "")
        key = header[len("Bearer ") :] if header.startswith("Bearer ") else ""
        if not key or (self.cfg.api_keys and key not in self.cfg.api_keys):
            raise Reject(text_error(401, "Authentication required"))
        return self.owner_for_key(key)

    def auth_openai(self, request: web.Request) -> str:
        """Inference and /models routes: any case of the scheme; OpenAI JSON 401."""
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if not header or scheme.lower() != "bearer" or not key.strip():
            raise Reject(
                openai_error(
                    401, "Missing Authorization header", "authentication_error", "missing_authorization"
                )
            )
        key = key.strip()
        if self.cfg.api_keys and key not in self.cfg.api_keys:
            raise Reject(openai_error(401, "Invalid API key", "authentication_error", "invalid_api_key"))
        return self.owner_for_key(key)


STATE = web.AppKey("state", State)


def state_of(request: web.Request) -> State:
    return request.app[STATE]
