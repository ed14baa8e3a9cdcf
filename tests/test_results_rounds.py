"""The job-level join: one record per first-round input, the best answer across rounds, and attempts."""

from __future__ import annotations

from emulator_server import EmulatorServer


def test_batch_ids_of_a_job_and_its_resubmission_give_one_answer_per_input(tmp_path, h):
    with EmulatorServer("--start-delay", "0", "--seed", "5", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        emu.configure(fail_rate=0.3)
        lines = h.chat_lines(40)
        src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
        code, doc, err = h.run_script("submit", str(src), env=env)
        assert code == 0, err
        first = doc["batches"][0]["batch_id"]
        h.run_script("poll", first, "--wait", "--interval", "0.1", env=env)
        code, doc, err = h.run_script("fetch_results", first, "--out", str(tmp_path / "r1"), env=env)
        assert code == 6 and doc["complete"] is False, (doc, err)
        failed = doc["counts"]["failed"]
        assert 0 < failed < 40
        retry = tmp_path / "r1" / "retry.jsonl"
        assert len(h.read_jsonl(retry)) == failed

        # the failed requests, sent again as they were, now succeed
        emu.configure(fail_rate=0.0)
        again = tmp_path / "again.jsonl"
        again.write_bytes(retry.read_bytes())
        code, doc, err = h.run_script("submit", str(again), env=env)
        assert code == 0, err
        second = doc["batches"][0]["batch_id"]
        h.run_script("poll", second, "--wait", "--interval", "0.1", env=env)

        out = tmp_path / "both"
        code, doc, err = h.run_script("fetch_results", first, second, "--out", str(out), env=env)
    assert code == 0 and doc["complete"] is True, (doc, err)
    assert (
        doc["counts"]["requests"] == 40 and doc["counts"]["completed"] == 40 and doc["counts"]["failed"] == 0
    )
    results = h.read_jsonl(out / "results.jsonl")
    assert [r["custom_id"] for r in results] == [
        line["custom_id"] for line in lines
    ]  # input order, once each
    retried = {r["custom_id"] for r in h.read_jsonl(again)}
    assert {r["custom_id"] for r in results if r["attempts"] == 2} == retried
    assert all(r["batch_id"] == (second if r["custom_id"] in retried else first) for r in results)
    assert (out / "retry.jsonl").read_bytes() == b""


def test_two_batches_that_share_custom_ids_but_not_requests_stay_separate_inputs(emulator, env, tmp_path, h):
    ids = []
    for name, text in (("a.jsonl", "Alpha"), ("b.jsonl", "Beta")):
        lines = h.chat_lines(2)
        for line in lines:
            line["body"]["messages"][0]["content"] = f"{text} question"
        code, doc, err = h.run_script("submit", str(h.write_jsonl(tmp_path / name, lines)), env=env)
        assert code == 0, err
        ids.append(doc["batches"][0]["batch_id"])
        h.run_script("poll", ids[-1], "--wait", "--interval", "0.1", env=env)
    code, doc, err = h.run_script("fetch_results", *ids, "--out", str(tmp_path / "out"), env=env)
    assert code == 0, err
    results = h.read_jsonl(tmp_path / "out" / "results.jsonl")
    assert [(r["batch_id"], r["attempts"]) for r in results] == [(ids[0], 1)] * 2 + [(ids[1], 1)] * 2
