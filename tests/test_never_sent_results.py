"""The requests of a shard that was never sent (a submit stopped early, or the server refused its file) are
listed where they belong: a ``missing`` line in results.jsonl (``batch_id`` and ``line_id`` null, an error
saying how to send them), their request line in retry.jsonl, their row in the export, counted in the summary.
Once ``submit.py --resubmit`` has sent them, a fetch lists their real answers in the same place, once.

Until last session's end, results.jsonl, retry.jsonl and the export simply had no line for them.
"""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path
from typing import Any

from emulator_server import EmulatorServer
from hostile_server import BATCHES, Action, HostileProxy, Seen, Upstream, reply

CAP = ("--max-requests", "3")  # the emulator refuses an uploaded file of more than 3 requests


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_rows(path: Path, lines: list[dict[str, Any]]) -> None:
    """The user's source rows beside a batch file (as create_batch_file.py writes them), for the export."""
    rows = [
        {"custom_id": line["custom_id"], "row": {"topic": f"topic of {line['custom_id']}"}} for line in lines
    ]
    with open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)


def ids(path: Path) -> list[str]:
    return [line["custom_id"] for line in read(path)]


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_never_sent_requests_are_missing_lines_in_results_retry_and_export_until_resubmitted(tmp_path, h):
    """Three files; the server refuses the second at upload (its cap), so the third is never tried. Fetch
    lists all nine requests in input order, the six never sent as missing (in retry.jsonl and both export
    formats too); after the advised resubmit, the same files hold their answers, each request once."""
    lines = {name: h.chat_lines(n, prefix=name) for name, n in (("a", 3), ("b", 4), ("c", 2))}
    files = [h.write_jsonl(tmp_path / f"{name}.jsonl", part) for name, part in lines.items()]
    for name, part in lines.items():
        write_rows(tmp_path / f"{name}.rows.jsonl", part)
    order = [line["custom_id"] for part in lines.values() for line in part]
    manifest = tmp_path / "job.manifest.json"
    out = tmp_path / "out"
    csv_export, jsonl_export = tmp_path / "answers.csv", tmp_path / "answers.jsonl"
    fetch = ("fetch_results", "--manifest", str(manifest), "--out", str(out))
    db, port = str(tmp_path / "emu.db"), free_port()
    with EmulatorServer("--start-delay", "0", "--quiet", *CAP, api_key=h.CANARY_KEY, db=db, port=port) as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script("submit", *map(str, files), "--manifest", str(manifest), env=env)
        assert code == 4 and "exceeds the maximum of 3" in doc["error"]["message"], (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env, code=6)

        code, doc, err = h.run_script(*fetch, "--export", str(csv_export), env=env)
        assert code == 6 and doc["complete"] is False and doc["finished"] is True, (code, doc, err)
        assert doc["unsent"] == {"shards": 2, "requests": 6} and "never sent" in err, doc
        counts = doc["counts"]
        assert (counts["requests"], counts["completed"], counts["missing"]) == (9, 3, 6), counts
        assert doc["failures_by_type"] == {"never_sent": 6}, doc
        (group,) = doc["failure_groups"]
        assert group["count"] == 6 and group["resubmit"] == "yes" and "--resubmit" in group["advice"], group

        results = read(out / "results.jsonl")
        assert [r["custom_id"] for r in results] == order  # input order, never-sent shards in their place
        sent_batch = json.loads(manifest.read_text())["shards"][0]["batch_id"]
        assert all(r["status"] == "completed" and r["batch_id"] == sent_batch for r in results[:3]), results
        for line in results[3:]:
            assert line["status"] == "missing" and line["batch_id"] is None and line["line_id"] is None, line
            assert line["error"]["type"] == "never_sent" and line["content"] is None, line
            assert f"submit.py --resubmit --manifest {manifest.resolve()}" in line["error"]["message"], line
        assert set(results[0]) == set(results[-1])  # the same keys on every line

        originals = b"".join(f.read_bytes() for f in files[1:])
        assert (out / "retry.jsonl").read_bytes() == originals  # the request lines as they are, in order

        with open(csv_export, encoding="utf-8-sig", newline="") as handle:
            table = list(csv.DictReader(handle))
        assert [row["custom_id"] for row in table] == order
        assert [row["topic"] for row in table] == [f"topic of {i}" for i in order]  # the user's columns too
        assert [row["status"] for row in table] == ["completed"] * 3 + ["missing"] * 6
        assert all("never sent" in row["error"] for row in table[3:]) and table[0]["content"], table

        code, doc, err = h.run_script(*fetch, "--export", str(jsonl_export), env=env)
        assert code == 6 and doc["counts"] == counts, (code, doc, err)
        exported = read(jsonl_export)
        assert [(r["custom_id"], r["status"], r["topic"]) for r in exported] == [
            (row["custom_id"], row["status"], row["topic"]) for row in table
        ]
        assert (out / "retry.jsonl").read_bytes() == originals  # a second fetch: the same files

    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY, db=db, port=port) as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
        assert code == 0 and doc["created"] == 2, (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env)
        code, doc, err = h.run_script(*fetch, "--export", str(csv_export), env=env)
        assert code == 0 and doc["complete"] is True and "unsent" not in doc, (code, doc, err)
        assert doc["counts"]["requests"] == doc["counts"]["completed"] == 9, doc

    batches = [s["batch_id"] for s in json.loads(manifest.read_text())["shards"]]
    results = read(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == order  # each once, where it was
    assert [r["batch_id"] for r in results] == [batches[0]] * 3 + [batches[1]] * 4 + [batches[2]] * 2
    assert all(r["status"] == "completed" and r["attempts"] == 1 and r["line_id"] for r in results), results
    assert (out / "retry.jsonl").read_bytes() == b""
    with open(csv_export, encoding="utf-8-sig", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert [(row["custom_id"], row["status"]) for row in table] == [(i, "completed") for i in order]


def refuse_upload_once(name: str, h: Any) -> Any:
    """A behaviour: the first upload of ``name``'s file is refused (the server's 400 for too many requests),
    answered only once a batch was created for another file (so that one is sent, this one never)."""
    marker = f'filename="{name}.'.encode()

    def behaviour(seen: Seen, proxy: HostileProxy) -> Action | None:
        if seen.method != "POST" or seen.path != "/files" or marker not in seen.body or proxy.state.get(name):
            return None
        proxy.state[name] = True

        def once_another_batch_exists(reply: Upstream, _: Seen) -> Upstream:  # outside the proxy's lock
            h.wait_until(lambda: proxy.requests_to(r"^/batches$", "POST"), what="another file's batch")
            return reply

        refusal = b"File contains 4 requests, which exceeds the maximum of 3"
        return Action(
            reply=Upstream(400, {"Content-Type": "text/plain"}, refusal), edit=once_another_batch_exists
        )

    return behaviour


def test_a_refused_first_shard_is_listed_before_the_sent_one_and_answered_in_its_place(tmp_path, h):
    """Two files uploaded at once: the first is refused after the second's batch exists, so the shard never
    sent comes first. Its requests are missing lines before the second file's answers; once resubmitted,
    its answers take their place before them (not after, not twice), and the same --out is still the job's."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(3, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(2, prefix="b"))
    order = ["a-00000", "a-00001", "a-00002", "b-00000", "b-00001"]
    manifest = tmp_path / "job.manifest.json"
    fetch = ("fetch_results", "--manifest", str(manifest))
    with h.start_emulator() as emu, HostileProxy(emu.base_url) as proxy:
        proxy.add(refuse_upload_once("a", h))
        env = h.script_env(proxy.base_url)
        submit = ("submit", str(a), str(b), "--manifest", str(manifest), "--uploads", "2")
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 4 and doc["error"]["shard"] == str(a.resolve()), (code, doc, err)
        shards = json.loads(manifest.read_text())["shards"]
        assert shards[0]["batch_id"] is None and shards[1]["batch_id"], shards
        h.poll_wait("--manifest", str(manifest), env=env, code=6)

        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and doc["unsent"] == {"shards": 1, "requests": 3}, (code, doc, err)
        results = read(Path(doc["files"]["results"]))
        assert [r["custom_id"] for r in results] == order
        assert [r["status"] for r in results] == ["missing"] * 3 + ["completed"] * 2, results
        assert [r["batch_id"] for r in results] == [None] * 3 + [shards[1]["batch_id"]] * 2
        assert ids(Path(doc["files"]["retry"])) == order[:3]

        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
        assert code == 0 and doc["created"] == 1, (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 0 and doc["complete"] is True, (code, doc, err)

    batches = [s["batch_id"] for s in json.loads(manifest.read_text())["shards"]]
    results = read(Path(doc["files"]["results"]))
    assert [r["custom_id"] for r in results] == order, results
    assert [r["batch_id"] for r in results] == [batches[0]] * 3 + [batches[1]] * 2
    assert all(r["status"] == "completed" and r["attempts"] == 1 for r in results), results
    assert doc["counts"]["requests"] == 5 and Path(doc["files"]["retry"]).read_bytes() == b""


def test_a_never_sent_file_gone_or_not_a_batch_file_is_said_and_a_fixed_one_is_listed_as_it_is(tmp_path, h):
    """The refused file deleted, then replaced by a file that is no batch file: fetch says so, lists the sent
    requests and still reports the shard unsent (exit 6). Fixed in place (three new requests, under the
    server's cap), it is listed as it is now, and that is what the advised resubmit sends and fetch answers."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(4, prefix="b"))
    manifest = tmp_path / "job.manifest.json"
    fetch = ("fetch_results", "--manifest", str(manifest))
    with h.start_emulator(*CAP) as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script("submit", str(a), str(b), "--manifest", str(manifest), env=env)
        assert code == 4, (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env, code=6)

        b.unlink()
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and doc["unsent"] == {"shards": 1, "requests": 4}, (code, doc, err)
        assert f"shard 1 was never sent and its input file {b.resolve()} is gone" in err, err
        assert doc["counts"]["requests"] == doc["counts"]["completed"] == 2, doc
        assert ids(Path(doc["files"]["results"])) == ["a-00000", "a-00001"]
        assert Path(doc["files"]["retry"]).read_bytes() == b""

        write_rows(b, h.chat_lines(4, prefix="b"))  # a rows file where the batch file was
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and "is not a batch file" in err and doc["counts"]["requests"] == 2, (code, doc, err)
        assert ids(Path(doc["files"]["results"])) == ["a-00000", "a-00001"]

        fixed = h.chat_lines(3, prefix="fixed")
        h.write_jsonl(b, fixed)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and "changed since it was planned" in err, (code, doc, err)
        assert doc["unsent"] == {"shards": 1, "requests": 3}, doc  # what will be sent, not the planned 4
        code, poll, err = h.run_script("poll", "--manifest", str(manifest), env=env)
        assert code == 6 and poll["unsent"] == {"shards": 1, "requests": 3} and "(3 requests)" in err, poll
        assert poll["unanswered"] == 3 and "3 request(s) without an answer" in err.splitlines()[-1], err
        order = ["a-00000", "a-00001", "fixed-00000", "fixed-00001", "fixed-00002"]
        assert ids(Path(doc["files"]["results"])) == order
        assert Path(doc["files"]["retry"]).read_bytes() == b.read_bytes()
        assert doc["counts"]["missing"] == 3 and doc["counts"]["requests"] == 5, doc

        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
        assert code == 0 and doc["created"] == 1, (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == 5, (code, doc, err)
        results = read(Path(doc["files"]["results"]))
        assert [r["custom_id"] for r in results] == order and all(r["status"] == "completed" for r in results)


def test_a_refused_input_fixed_and_sent_by_the_same_command_again_is_listed_once_in_its_place(tmp_path, h):
    """b is refused at upload (a model the server does not serve), c never tried: fetch lists both as
    missing. The user fixes b and runs the same submit command, which plans b afresh (a new shard in its
    place) and sends b and c: fetch then lists the seven answers in input order, none of the old lines."""
    unserved = "Qwen/Qwen3.5-27B"  # not in the emulator's model list
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(3, prefix="b", model=unserved))
    c = h.write_jsonl(tmp_path / "c.jsonl", h.chat_lines(2, prefix="c"))
    submit = ("submit", str(a), str(b), str(c))
    manifest = f"{a}.manifest.json"
    fetch = ("fetch_results", "--manifest", manifest)
    order = [f"{name}-{i:05d}" for name, n in (("a", 2), ("b", 3), ("c", 2)) for i in range(n)]
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 3 and doc["error"]["shard"] == str(b.resolve()), (code, doc, err)
        h.poll_wait("--manifest", manifest, env=env, code=6)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and doc["counts"]["missing"] == 5 and doc["counts"]["requests"] == 7, (code, doc)
        assert ids(Path(doc["files"]["results"])) == order

        h.write_jsonl(b, h.chat_lines(3, prefix="b"))  # the fix
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 0 and doc["created"] == 2, (code, doc, err)
        shards = json.loads(Path(manifest).read_text())["shards"]
        assert [s["index"] for s in shards] != [0, 1, 2], shards  # b planned afresh: a shard of its own
        h.poll_wait("--manifest", manifest, env=env)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 0 and doc["complete"] is True and doc["counts"]["requests"] == 7, (code, doc, err)
        results = read(Path(doc["files"]["results"]))
        assert [r["custom_id"] for r in results] == order, results
        assert [r["batch_id"] for r in results] == [
            s["batch_id"] for s in shards for _ in range(s["requests"])
        ]
        assert (
            all(r["status"] == "completed" for r in results) and not Path(doc["files"]["retry"]).read_bytes()
        )


def test_an_uploaded_shard_without_a_batch_is_listed_from_what_was_uploaded(tmp_path, h):
    """The server refuses b's batch creation (its file is uploaded). Fetch lists b's requests as missing,
    from the local file while it is unchanged and from the server's copy once it changed (the batch is made
    from the upload); the resubmit creates b's batch from that upload and fetch lists its answers."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(2, prefix="b"))
    manifest = tmp_path / "job.manifest.json"
    fetch = ("fetch_results", "--manifest", str(manifest))
    order = ["a-00000", "a-00001", "b-00000", "b-00001"]
    refusal = "the batch could not be created"
    with h.start_emulator() as emu, HostileProxy(emu.base_url) as proxy:
        proxy.add(reply(400, refusal, on=BATCHES, method="POST", times=1, after=1))  # b's creation
        env = h.script_env(proxy.base_url)
        code, doc, err = h.run_script("submit", str(a), str(b), "--manifest", str(manifest), env=env)
        assert code == 4 and refusal in doc["error"]["message"], (code, doc, err)
        shard = json.loads(manifest.read_text())["shards"][1]
        assert shard["file_id"] and shard["batch_id"] is None, shard
        h.poll_wait("--manifest", str(manifest), env=env, code=6)

        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and doc["unsent"] == {"shards": 1, "requests": 2}, (code, doc, err)
        results = read(Path(doc["files"]["results"]))
        assert [(r["custom_id"], r["status"]) for r in results] == list(
            zip(order, ["completed"] * 2 + ["missing"] * 2, strict=True)
        ), results
        assert results[2]["error"]["type"] == "never_sent", results[2]

        h.write_jsonl(b, h.chat_lines(3, prefix="edited"))  # not what was uploaded
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and "server's copy" in err, (code, doc, err)
        assert ids(Path(doc["files"]["results"])) == order  # what the batch will be made from
        assert ids(Path(doc["files"]["retry"])) == order[2:]

        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", str(manifest), env=env)
        assert code == 0 and doc["created"] == 1, (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 0 and doc["complete"] is True, (code, doc, err)
        results = read(Path(doc["files"]["results"]))
        assert [(r["custom_id"], r["status"]) for r in results] == [(i, "completed") for i in order], results


def test_never_sent_inputs_sent_later_are_first_round_inputs_of_the_next_rounds(tmp_path, h):
    """Every request fails (the server's fail rate 1). b, refused at upload, is listed as never sent, fixed
    and sent by --resubmit (finishing round 1); the next --resubmit sends a's and b's failures as round 2.
    Fetch lists each input once, in input order, with 2 attempts and its round-2 answer; retry.jsonl holds
    the round-1 request lines (b's as fixed)."""
    unserved = "Qwen/Qwen3.5-27B"  # not in the emulator's model list
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(2, prefix="b", model=unserved))
    manifest = tmp_path / "job.manifest.json"
    fetch = ("fetch_results", "--manifest", str(manifest))
    resubmit = ("submit", "--resubmit", "--manifest", str(manifest))
    order = ["a-00000", "a-00001", "b-00000", "b-00001"]
    with h.start_emulator("--fail-rate", "1") as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script("submit", str(a), str(b), "--manifest", str(manifest), env=env)
        assert code == 3, (code, doc, err)
        h.poll_wait("--manifest", str(manifest), env=env, code=6)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and doc["failures_by_type"]["never_sent"] == 2, (code, doc, err)

        h.write_jsonl(b, h.chat_lines(2, prefix="b"))
        code, doc, err = h.run_script(*resubmit, env=env)
        assert code == 0 and doc["created"] == 1, (code, doc, err)  # round 1 finished: b
        h.poll_wait("--manifest", str(manifest), env=env, code=6)
        code, doc, err = h.run_script(*resubmit, env=env)
        assert code == 0 and doc["created"] == 1, (code, doc, err)  # round 2: the four failures
        h.poll_wait("--manifest", str(manifest), env=env, code=6)
        code, doc, err = h.run_script(*fetch, env=env)
        assert code == 6 and "unsent" not in doc and doc["counts"]["requests"] == 4, (code, doc, err)

    shards = json.loads(manifest.read_text())["shards"]
    assert [s["round"] for s in shards] == [1, 1, 2] and shards[2]["requests"] == 4, shards
    results = read(Path(doc["files"]["results"]))
    assert [r["custom_id"] for r in results] == order, results
    assert all(r["attempts"] == 2 and r["batch_id"] == shards[2]["batch_id"] for r in results), results
    assert all(r["status"] == "failed" for r in results), results
    assert Path(doc["files"]["retry"]).read_bytes() == a.read_bytes() + b.read_bytes()
