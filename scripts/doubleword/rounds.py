"""A job's rounds seen together: one record per first-round input, the best across rounds.

``job_records`` reduces a results.jsonl to one record per first-round input (best across rounds:
``completed`` beats everything, otherwise the latest round's record; ``attempts`` = rounds that sent it).
The download engine already writes results.jsonl that way (one line per input); a results.jsonl with a
line per round's request (each naming its batch) gives the same records, so resubmission reads either.
Whether resubmitting helps is judged by the engine (its ``failure_groups``: ``resubmit``, ``advice``).
``check_command`` is the command that checks a job once it is sent (SKILL.md's step 4: fetch with the export).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doubleword.manifest import Manifest

USABLE = "completed"
RETRY_HELPS = frozenset(
    {"RetriableHttpStatus", "NetworkError", "Timeout", "TaskTerminated", "BatchTerminated"}
)  # failure types a new round may pass
SCRIPTS = Path(__file__).resolve().parent.parent  # the folder of the commands


def check_command(manifest: Manifest) -> str:
    """The command that checks the job (and downloads what is ready): fetch with an export, as SKILL.md's
    step 4 runs it. The export is the one the last fetch wrote (absolute), so that following the hint
    updates the user's file; before any, the job's own ``<name>.answers.csv`` beside the manifest (two
    jobs in one folder each keep theirs), ``.jsonl`` for embeddings (a vector is larger than a
    spreadsheet cell holds)."""
    export = manifest.fetch.get("export") if isinstance(manifest.fetch, dict) else None
    if not isinstance(export, str) or not export:
        embeds = any((s.endpoint or "").endswith("/embeddings") for s in manifest.shards)
        where = manifest.path.resolve().parent
        export = str(where / f"{job_name(manifest)}.answers.{'jsonl' if embeds else 'csv'}")
    return f"python3 {_q(SCRIPTS / 'fetch_results.py')} --manifest {_q(manifest.path.resolve())} --export {_q(export)}"


def job_name(manifest: Manifest) -> str:
    """The job's short name, from its manifest's: ``reviews`` for ``reviews.jsonl.manifest.json``."""
    return manifest.path.name.removesuffix(".json").removesuffix(".manifest").removesuffix(".jsonl")


def resubmit_command(manifest: Manifest, groups: list[dict[str, Any]]) -> str | None:
    """The next round (SKILL.md's step 5) for a finished job, given fetch's failure groups: None when
    every group says resubmitting will not help (those requests need fixing, not resending).

    Cut-off answers get the groups' suggested ``--max-tokens``. Requests the server refused (a 400 or
    422: :func:`refused`) are left out by ``--skip-refused`` from the first round on: resent unchanged,
    they are refused again. When every failure seen twice is in a group not worth resending,
    ``--skip-persistent`` leaves those out too (resent as they are, they fail again); not otherwise, as
    it would also leave out answers cut twice, or requests never answered twice, which a new round does
    help."""
    if not groups or all(g.get("resubmit") == "no" for g in groups):
        return None
    command = f"python3 {_q(SCRIPTS / 'submit.py')} --resubmit --manifest {_q(manifest.path.resolve())}"
    limits = [g["suggested_max_tokens"] for g in groups if g.get("suggested_max_tokens")]
    if limits:
        command += f" --max-tokens {max(limits)}"
    repeated = [g for g in groups if g.get("persistent")]
    if repeated and all(g.get("resubmit") == "no" for g in repeated):
        command += " --skip-persistent"
    if any(refused(g["result_status"], g["type"], g["status"]) for g in groups):
        command += " --skip-refused"
    return command


def refused(status: str, kind: Any, http: Any) -> bool:
    """A request the server refused for what it is (HTTP 4xx other than 408 and 429): sent again unchanged
    it is refused again. The failure groups' "no" and ``submit.py --resubmit --skip-refused`` agree."""
    return (
        status == "failed"
        and kind not in RETRY_HELPS
        and not (isinstance(http, int) and (http >= 500 or http in (408, 429)))
    )


def _q(path: object) -> str:
    return shlex.quote(str(path))


@dataclass
class InputRecord:
    """One first-round input as the job stands."""

    custom_id: str
    status: str
    error: dict[str, Any] | None
    round: int  # the round whose record this is
    attempts: int


def signature(error: dict[str, Any] | None) -> list[Any] | None:
    """How a request failed, comparable across rounds (type, HTTP status, message)."""
    if not error:
        return None
    return [error.get("type"), error.get("status"), error.get("message")]


def _round_of(manifest: Manifest) -> dict[str, int]:
    return {s.batch_id: s.round for s in manifest.shards if s.batch_id}


def read_results(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def job_records(manifest: Manifest, results: Iterable[dict[str, Any]]) -> list[InputRecord]:
    """One record per input of the first round, in input order, best across rounds."""
    rounds = _round_of(manifest)
    by_id: dict[str, InputRecord] = {}
    for line in results:
        custom_id = line.get("custom_id")
        if not isinstance(custom_id, str):
            continue
        number = rounds.get(str(line.get("batch_id")), 1)
        given = line.get("attempts")
        attempts = given if isinstance(given, int) else 1
        record = InputRecord(custom_id, str(line.get("status")), line.get("error"), number, attempts)
        seen = by_id.get(custom_id)
        if seen is None:
            if number == 1 or isinstance(line.get("attempts"), int):
                by_id[custom_id] = record
            continue  # a later round's line for an input the first round does not have: not the job's
        if "attempts" not in line:
            record.attempts = seen.attempts + 1
        if seen.status != USABLE and (record.status == USABLE or record.round >= seen.round):
            by_id[custom_id] = record
        else:
            seen.attempts = record.attempts
    return list(by_id.values())
