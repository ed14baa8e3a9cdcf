"""The completion window: ``--resubmit --window`` is the new round's (recorded in the round, sent to the
server), and a window that cannot apply (the job's batches exist) is reported, never silently dropped."""

from __future__ import annotations

import json
from pathlib import Path

import requests
from emulator_server import EmulatorServer


def test_resubmit_window_is_the_new_rounds_and_an_ignored_window_is_a_warning(tmp_path, h):
    with EmulatorServer("--start-delay", "0", "--quiet", api_key=h.CANARY_KEY) as emu:
        env = h.script_env(emu.base_url)
        lines = h.chat_lines(4)
        for line in lines[:2]:  # cut off at 1 token: truncated, to resend
            line["body"]["max_tokens"] = 1
        src = h.write_jsonl(tmp_path / "jobs.jsonl", lines)
        code, first, err = h.run_script("submit", str(src), env=env)
        assert code == 0 and first["window"] == "24h" and "warnings" not in first, first

        # the job exists: another --window cannot apply to it, and says so (stderr and JSON)
        code, again, err = h.run_script("submit", str(src), "--window", "1h", env=env)
        assert code == 0 and again["created"] == 0, again
        assert any("--window 1h was ignored" in w for w in again["warnings"]) and "--window 1h" in err
        code, again, err = h.run_script("submit", str(src), env=env)  # no --window given: nothing to say
        assert code == 0 and "warnings" not in again, again

        manifest = first["manifest"]
        assert h.run_script("poll", "--manifest", manifest, "--wait", "--interval", "0.1", env=env).code == 0
        resubmit = ("--resubmit", "--manifest", manifest, "--max-tokens", "64", "--window", "1h")
        code, plan, err = h.run_script("submit", *resubmit, "--dry-run", env=env)
        assert code == 0 and plan["window"] == "1h" and plan["would_resubmit"] == 2, plan
        code, res, err = h.run_script("submit", *resubmit, env=env)
        assert code == 0 and res["round"] == 2 and res["window"] == "1h" and res["resubmitted"] == 2, res
        assert "warnings" not in res, res

        data = json.loads(Path(manifest).read_text())
        assert data["window"] == "24h" and data["rounds"][1]["window"] == "1h"
        served = requests.get(f"{emu.base_url}/batches", headers=emu.headers, timeout=30).json()["data"]
        windows = {b["metadata"]["dwb_round"]: b["completion_window"] for b in served}
        assert windows == {"1": "24h", "2": "1h"}, windows

        # a round planned but not wholly sent is finished with the window it was planned with
        data["shards"][-1].update(create_state="pending", batch_id=None, status=None)
        Path(manifest).write_text(json.dumps(data))
        code, res, err = h.run_script(
            "submit", "--resubmit", "--manifest", manifest, "--window", "24h", env=env
        )
        assert code == 0 and res["round"] == 2 and res["window"] == "1h" and res["created"] == 1, res
        assert any("--window 24h was ignored" in w for w in res["warnings"]) and "--window 24h" in err, res
        served = requests.get(f"{emu.base_url}/batches", headers=emu.headers, timeout=30).json()["data"]
        assert sorted(b["completion_window"] for b in served) == ["1h", "1h", "24h"], served
