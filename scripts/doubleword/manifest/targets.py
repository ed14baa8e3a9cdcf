"""What a lifecycle command (poll, cancel, fetch) works on: batch ids or a manifest, and the server."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from doubleword.cli import warn
from doubleword.config import BASE_URL_ENV, raw_base_url
from doubleword.errors import InputError
from doubleword.manifest.records import Manifest

if TYPE_CHECKING:  # the client (and requests) load only when a command talks to the server
    from doubleword.client import ApiClient


def add_target_args(parser: Any, *, what: str = "batch") -> None:
    """Positional batch ids and ``--manifest`` (every lifecycle script accepts either)."""
    parser.add_argument("batch_ids", nargs="*", metavar="BATCH_ID", help=f"{what} id(s)")
    parser.add_argument("--manifest", help="a manifest written by submit.py (instead of batch ids)")


def load_targets(args: Any) -> tuple[Manifest | None, list[str]]:
    """The manifest (if any) and the batch ids to work on, from ``add_target_args`` flags."""
    from doubleword.errors import UsageError

    if args.manifest and args.batch_ids:
        raise UsageError("give batch ids or --manifest, not both")
    if args.manifest:
        manifest = Manifest.load(args.manifest)
        ids = manifest.batch_ids()
        if not ids:
            raise InputError(f"manifest {manifest.path.resolve()} has no batches yet; run submit.py first")
        return manifest, ids
    if not args.batch_ids:
        raise UsageError("give at least one batch id or --manifest PATH")
    for given in args.batch_ids:
        if given.endswith((".json", ".jsonl")) or os.path.isfile(given):
            raise UsageError(f"{given} is a file, not a batch id; a manifest goes with --manifest {given}")
    return None, list(dict.fromkeys(args.batch_ids))


def job_base_url(args: Any, manifest: Manifest | None) -> str:
    """The server a job's commands talk to, as given (checked by the client): ``--base-url`` if given, else
    the server the manifest recorded, else ``$DOUBLEWORD_BASE_URL`` (or the default)."""
    recorded = manifest.base_url if manifest is not None else ""
    if getattr(args, "base_url", None) or not recorded:
        return raw_base_url(args)
    return recorded


def client_for(args: Any, manifest: Manifest | None) -> ApiClient:
    """The API client for a job, on :func:`job_base_url`. An environment naming another server than the
    manifest's only earns a warning: the job's batches live where they were submitted."""
    from doubleword.client import client_from_args

    url = job_base_url(args, manifest)
    recorded = manifest is not None and not getattr(args, "base_url", None) and bool(manifest.base_url)
    env_url = (os.environ.get(BASE_URL_ENV) or "").strip().rstrip("/")
    if manifest is not None and recorded and env_url and env_url != url.rstrip("/"):
        warn(
            f"{BASE_URL_ENV} is {env_url} but the job in {manifest.path.resolve()} was submitted to "
            f"{url}; using {url} (pass --base-url to override)"
        )
    return client_from_args(argparse.Namespace(**{**vars(args), "base_url": url}))
