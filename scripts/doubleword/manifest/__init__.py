"""The manifest: the job, as typed records (see records.py for the layout), checked once where loaded."""

from doubleword.fingerprint import sha256_file
from doubleword.manifest.check import FORMAT, STATES, VERSION
from doubleword.manifest.records import (
    DOWNLOAD_KINDS,
    Manifest,
    Round,
    Shard,
    default_manifest_path,
    exclusive_lock,
    fetch_state,
    new_shard,
    record_batch,
)
from doubleword.manifest.targets import add_target_args, client_for, job_base_url, load_targets

__all__ = [
    "DOWNLOAD_KINDS",
    "FORMAT",
    "STATES",
    "VERSION",
    "Manifest",
    "Round",
    "Shard",
    "add_target_args",
    "client_for",
    "default_manifest_path",
    "exclusive_lock",
    "fetch_state",
    "job_base_url",
    "load_targets",
    "new_shard",
    "record_batch",
    "sha256_file",
]
