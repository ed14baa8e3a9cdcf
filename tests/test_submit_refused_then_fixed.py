"""The natural retry after the server refused one file of a multi-file job: the user fixes that file and runs
the same submit command again. The fixed file was never sent (refused at upload: no file id, no batch id), so
it is planned afresh and sent as it is now, in its place among the inputs; what was sent is never sent again,
and an input the job did send is still refused when it changed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import requests

UNSERVED = "Qwen/Qwen3.5-27B"  # not in the emulator's model list: the upload is refused (403)


def server_files(emu: Any) -> dict[str, list[dict[str, Any]]]:
    """The job's uploaded files on the server, by the input's name, each with its lines as received."""
    listing = requests.get(f"{emu.base_url}/files", headers=emu.headers, params={"limit": 100}, timeout=10)
    found: dict[str, list[dict[str, Any]]] = {}
    for item in listing.json()["data"]:
        if item.get("purpose") == "batch":
            url = f"{emu.base_url}/files/{item['id']}/content"
            body = requests.get(url, headers=emu.headers, timeout=10).text
            found.setdefault(item["filename"].split(".")[0], []).extend(
                json.loads(x) for x in body.splitlines()
            )
    return found


def test_the_same_command_sends_a_fixed_refused_file_in_its_place(tmp_path, h):
    """a is sent, b is refused at upload (c never tried); after a fix that breaks a line, the same command
    refuses b locally (exit 4, nothing uploaded); after the real fix, the same command sends b and c once,
    the next run sends nothing, and the results keep the inputs' order a, b, c."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(3, prefix="b", model=UNSERVED))
    c = h.write_jsonl(tmp_path / "c.jsonl", h.chat_lines(2, prefix="c"))
    submit = ("submit", str(a), str(b), str(c))
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 3 and doc["error"]["shard"] == str(b.resolve()), (code, doc, err)
        assert sorted(server_files(emu)) == ["a"] and emu.stats()["batches_created"] == 1

        broken = h.chat_lines(3, prefix="b")
        broken[1]["body"]["temperature"] = 7  # out of range: local validation refuses it
        h.write_jsonl(b, broken)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 4 and doc["error"]["type"] == "invalid_input" and "made for other" not in err, doc
        assert [r["valid"] for r in doc["validation"]] == [False], doc
        assert sorted(server_files(emu)) == ["a"] and emu.stats()["batches_created"] == 1

        h.write_jsonl(b, h.chat_lines(3, prefix="b"))  # the fix
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 0 and doc["created"] == 2 and doc["existing"] == 1, (code, doc, err)
        assert "made for other" not in err and "sent as it is now" in err, err
        assert [Path(x["shard"]).name for x in doc["batches"]] == ["a.jsonl", "b.jsonl", "c.jsonl"], doc
        received = server_files(emu)
        assert {name: len(lines) for name, lines in received.items()} == {"a": 2, "b": 3, "c": 2}
        assert {line["body"]["model"] for line in received["b"]} == {h.CHAT_MODEL}  # the fixed content

        code, doc, err = h.run_script(*submit, env=env)  # once more: nothing is sent again
        assert code == 0 and doc["created"] == 0 and doc["existing"] == 3, (code, doc, err)
        assert emu.stats()["files_created"] == 3 and emu.stats()["batches_created"] == 3
        manifest = doc["manifest"]
        h.poll_wait("--manifest", manifest, env=env)
        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
        assert code == 0 and doc["complete"] is True and doc["counts"]["completed"] == 7, (code, doc, err)
        order = [r["custom_id"] for r in h.read_jsonl(Path(doc["files"]["results"]))]
        assert order == ["a-00000", "a-00001", "b-00000", "b-00001", "b-00002", "c-00000", "c-00001"], order


def test_a_fixed_input_that_was_split_is_split_again_from_its_new_content(tmp_path, h):
    """b was split into two shards (--max-requests 3), both refused; fixed and shortened to two requests,
    the same command sends it whole (one file, one batch), and the old split files are gone."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(3, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(5, prefix="b", model=UNSERVED))
    submit = ("submit", str(a), str(b), "--max-requests", "3")
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 3, (code, doc, err)
        manifest = Path(doc["error"]["manifest"])
        split = [s["path"] for s in json.loads(manifest.read_text())["shards"][1:]]
        assert len(split) == 2 and all(Path(p).is_file() for p in split), split

        h.write_jsonl(b, h.chat_lines(2, prefix="b"))
        # the dry run shows the plan the run makes: b whole, one batch of 2 (it showed the old split: 2
        # batches to create, 3 + 2 requests), and changes nothing
        before = manifest.read_bytes()
        code, doc, err = h.run_script(*submit, "--dry-run", env=env)
        assert code == 0 and doc["dry_run"] is True and doc["batches_to_create"] == 1, (code, doc, err)
        assert [(x["shard"], x["requests"]) for x in doc["batches"]] == [
            (str(a.resolve()), 3),
            (str(b.resolve()), 2),
        ], doc
        assert "dry run: 1 batch(es) would be created, 1 already there, 5 requests" in err.splitlines()[-1]
        assert manifest.read_bytes() == before and all(Path(p).is_file() for p in split)
        assert emu.stats()["batches_created"] == 1

        code, doc, err = h.run_script(*submit, env=env)
        assert code == 0 and doc["created"] == 1 and doc["existing"] == 1, (code, doc, err)
        assert [x["shard"] for x in doc["batches"]] == [str(a.resolve()), str(b.resolve())], doc
        assert not any(Path(p).exists() for p in split), split
        received = server_files(emu)
        assert sorted(line["custom_id"] for line in received["b"]) == ["b-00000", "b-00001"], received
        assert len(received["a"]) == 3 and emu.stats()["batches_created"] == 2


def test_a_changed_input_that_the_job_sent_is_still_refused(tmp_path, h):
    """a was sent; b was refused. Changing a (with or without fixing b) is refused, naming a and what runs,
    before anything is uploaded; restoring a and fixing only b goes ahead."""
    a_lines = h.chat_lines(2, prefix="a")
    a = h.write_jsonl(tmp_path / "a.jsonl", a_lines)
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(2, prefix="b", model=UNSERVED))
    submit = ("submit", str(a), str(b))
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 3, (code, doc, err)
        batch_id = json.loads(Path(doc["error"]["manifest"]).read_text())["shards"][0]["batch_id"]

        h.write_jsonl(a, h.chat_lines(3, prefix="a"))
        h.write_jsonl(b, h.chat_lines(2, prefix="b"))
        code, doc, err = h.run_script(*submit, env=env)
        message = doc["error"]["message"]
        assert code == 4 and f"{a} changed since this job sent it" in message, (code, doc, err)
        assert (
            str(b) not in message.split(" changed")[0]
            and batch_id in message
            and "--manifest NEW_PATH" in message
        )
        assert emu.stats()["files_created"] == 1 and emu.stats()["batches_created"] == 1

        h.write_jsonl(a, a_lines)  # restored
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 0 and doc["created"] == 1 and doc["existing"] == 1, (code, doc, err)
        assert emu.stats()["files_created"] == 2 and emu.stats()["batches_created"] == 2


def test_a_refused_shard_file_fixed_in_place_is_validated_again_before_it_is_sent(tmp_path, h):
    """b was split (--max-requests 2) and its first shard refused; the user edits the shard files named in
    error.shard instead of the input. A broken edit is refused locally (exit 4, every problem listed in
    error.validation, nothing uploaded); the real fix is sent by the same command and by nothing else."""
    a = h.write_jsonl(tmp_path / "a.jsonl", h.chat_lines(2, prefix="a"))
    b = h.write_jsonl(tmp_path / "b.jsonl", h.chat_lines(4, prefix="b", model=UNSERVED))
    submit = ("submit", str(a), str(b), "--max-requests", "2")
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 3 and doc["error"]["shard"] != str(b.resolve()), (code, doc, err)
        shards = [
            Path(s["path"]) for s in json.loads(Path(doc["error"]["manifest"]).read_text())["shards"][1:]
        ]
        assert Path(doc["error"]["shard"]) == shards[0] and len(shards) == 2, shards

        for shard in shards:
            fixed = [json.loads(x) for x in shard.read_text().splitlines()]
            for line in fixed:
                line["body"]["model"] = h.CHAT_MODEL
            fixed[1]["body"]["temperature"] = 7  # a slip while editing
            h.write_jsonl(shard, fixed)
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 4 and doc["error"]["shard"] == str(shards[0]), (code, doc, err)
        assert doc["error"]["validation"][0]["valid"] is False and "temperature" in doc["error"]["message"], (
            doc
        )
        assert sorted(server_files(emu)) == ["a"]

        for shard in shards:
            h.write_jsonl(
                shard, [{**x, "body": {**x["body"], "temperature": 0}} for x in h.read_jsonl(shard)]
            )
        code, doc, err = h.run_script(*submit, env=env)
        assert code == 0 and doc["created"] == 2 and doc["existing"] == 1, (code, doc, err)
        received = server_files(emu)
        assert sorted(line["custom_id"] for line in received["b-001"] + received["b-002"]) == [
            f"b-{i:05d}" for i in range(4)
        ], received
        assert emu.stats()["files_created"] == 3 and emu.stats()["batches_created"] == 3
