"""A batch cancelled while it is still validating is never populated, and Doubleword reports it
`cancelling` for good (doubleword-api.md 5.2, emulator checklist 16). The job must still end: poll and
fetch see it finished (exit 6, its requests `missing`), --resubmit sends them, and the next poll is 0.
poll's line counts the requests a cancelled batch will never run as done, so it reaches 100%."""

from __future__ import annotations

from emulator_server import EmulatorServer


def test_a_batch_cancelled_while_validating_ends_and_its_requests_can_be_resubmitted(tmp_path, h) -> None:
    with EmulatorServer("--start-delay", "60", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        jobs = h.write_jsonl(tmp_path / "jobs.jsonl", h.chat_lines(4))
        code, doc, err = h.run_script("submit", str(jobs), env=env)
        assert code == 0, err
        manifest = doc["manifest"]
        code, doc, err = h.run_script("cancel_batch", "--manifest", manifest, env=env)
        assert code == 0, err
        served = h.run_script("list_batches", env=env).doc["batches"][0]["status"]
        assert served == "cancelling"  # as the server says it, for good

        code, doc, err = h.run_script("poll", "--manifest", manifest, env=env)
        assert code == 6, (doc, err)  # finished without answers, not 7 for ever
        assert doc["all_terminal"] is True and doc["batches"][0]["status"] == "cancelled"
        assert doc["unanswered"] == 4 and doc["next_check_seconds"] is None
        assert "4/4 requests done (100.0%), 4 of them never ran" in err.splitlines()[-1], err

        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
        assert code == 6 and doc["finished"] is True, (doc, err)
        assert doc["counts"]["missing"] == 4

        emu.configure(start_delay=0.05)
        code, doc, err = h.run_script("submit", "--resubmit", "--manifest", manifest, env=env)
        assert code == 0 and doc["resubmitted"] == 4, (doc, err)
        code, doc, err = h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env)
        assert code == 0, (doc, err)
        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
        assert code == 0 and doc["counts"]["completed"] == 4, (doc, err)
