"""Every command's closing line on stderr writes counts with thousands separators, as submit's does
("1,200 requests"); stdout's JSON keeps plain integers."""

from __future__ import annotations


def test_counts_in_the_closing_lines_have_thousands_separators(tmp_path, h):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("".join(f"question {i}\n" for i in range(1200)), encoding="utf-8")
    batch = tmp_path / "jobs.jsonl"
    code, doc, err = h.run_script(
        "create_batch_file", "--model", h.CHAT_MODEL, "--prompts", str(prompts), "-o", str(batch)
    )
    assert code == 0, err
    assert "wrote 1,200 requests to 1 file(s)" in err.splitlines()[-1], err
    with h.start_emulator() as emu:
        env = h.script_env(emu.base_url)
        code, doc, err = h.run_script("submit", str(batch), env=env)
        assert code == 0 and "1,200 requests" in err.splitlines()[-1], err
        manifest = doc["manifest"]
        poll = h.poll_wait("--manifest", manifest, env=env)
        assert "1,200/1,200 requests done (100.0%)" in poll.stderr.splitlines()[-1], poll.stderr
        code, doc, err = h.run_script("fetch_results", "--manifest", manifest, env=env)
    assert code == 0, err
    assert "1,200 requests: 1,200 completed; complete" in err.splitlines()[-1], err
    assert doc["counts"]["requests"] == 1200 and doc["counts"]["completed"] == 1200  # JSON: plain numbers
