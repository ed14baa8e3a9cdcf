"""The job-level join: one record per first-round input, the best answer across rounds, and attempts.

(Two batches that merely share custom_ids, with no resubmission between them, are the attribution case
in test_results_attribution.py: separate inputs, a first attempt each.)
"""

from __future__ import annotations


def test_batch_ids_of_a_job_and_its_resubmission_give_one_answer_per_input(tmp_path, h):
    with h.start_emulator("--seed", "5") as emu:
        env = h.script_env(emu.base_url)
        emu.configure(fail_rate=0.3)
        lines = h.chat_lines(40)
        first = h.submit_lines(tmp_path, lines, env).batch_id
        h.poll_wait(first, env=env, code=6)  # finished, some requests failed
        code, doc, err = h.run_script("fetch_results", first, "--out", str(tmp_path / "r1"), env=env)
        assert code == 6 and doc["complete"] is False, (doc, err)
        failed = doc["counts"]["failed"]
        assert 0 < failed < 40
        retry = tmp_path / "r1" / "retry.jsonl"
        assert len(h.read_jsonl(retry)) == failed

        # the failed requests, sent again as they were to a server that now fails none (a 400/422 would
        # be refused again at the fail rate), succeed
        emu.configure(fail_rate=0.0)
        again = tmp_path / "again.jsonl"
        again.write_bytes(retry.read_bytes())
        code, doc, err = h.run_script("submit", str(again), env=env)
        assert code == 0, err
        second = doc["batches"][0]["batch_id"]
        h.poll_wait(second, env=env)

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
