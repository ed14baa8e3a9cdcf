"""Seeded fault injection (500/503/429/drop/truncate) on API calls, never on /healthz or /_emulator,
with some mutating calls taking effect before the reply is lost; and --fail-rate error lines, whose 400/422
refuse the same request again in a later batch."""

from __future__ import annotations

import collections
import http.client
import json
from urllib.parse import urlsplit

import requests
from conftest import Api, chat_line, jsonl
from emulator_server import EmulatorServer


def raw_get(base_url: str, path: str) -> tuple[str, object]:
    """One GET over a fresh connection: ('ok', (status, headers, body)) or ('error', exception)."""
    u = urlsplit(base_url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request("GET", u.path + path, headers={"Authorization": "Bearer sk-test"})
        resp = conn.getresponse()
        body = resp.read()
        return "ok", (resp.status, dict(resp.headers), body)
    except (http.client.HTTPException, OSError) as exc:
        return "error", exc
    finally:
        conn.close()


def test_every_fault_kind_appears_and_looks_right():
    with EmulatorServer("--fault-rate", "1.0", "--seed", "3", "--fault-retry-after", "1") as emu:
        for _ in range(60):
            raw_get(emu.base_url, "/models")
        assert requests.get(emu.root_url + "/healthz", timeout=5).text == "OK"
        log = emu.requests_log()
        assert len(log) == 60 and all(e["path"] == "/v1/models" for e in log)
        kinds = collections.Counter(e["fault"] for e in log)
        assert set(kinds) == {"500", "503", "429", "drop", "truncate"}
        assert emu.stats()["faults_injected"] == 60
        # check the shapes of each kind with fresh calls
        seen = set()
        for _ in range(60):
            outcome, val = raw_get(emu.base_url, "/batches")
            fault = emu.requests_log()[-1]["fault"]
            if fault == "500":
                status, headers, body = val
                assert (status, body) == (500, b"Internal server error")
            elif fault in ("503", "429"):
                status, headers, body = val
                assert status == int(fault) and headers["Retry-After"] == "1"
                assert json.loads(body)["retry_after_seconds"] == 1
            elif fault == "drop":
                assert outcome == "error"
            elif fault == "truncate":
                assert outcome == "error" and isinstance(val, http.client.IncompleteRead)
            seen.add(fault)
        assert seen == {"500", "503", "429", "drop", "truncate"}


def test_lost_replies_after_effect_and_before():
    with EmulatorServer("--fault-rate", "0", "--seed", "11", "--start-delay", "0") as emu:
        api = Api(emu)
        emu.configure(fault_rate=1.0)
        outcomes = []
        for i in range(40):
            try:
                r = api.upload(jsonl([chat_line(i)]), filename=f"f{i}.jsonl")
                outcomes.append(r.status_code)
            except requests.RequestException:
                outcomes.append("lost")
        emu.configure(fault_rate=0)
        lost = outcomes.count("lost")
        created = emu.stats()["files_created"]
        listed = len(api.get("/files", params={"limit": 101}).json()["data"])
        assert created == listed
        # some lost replies happened after the file was created, some before
        assert 0 < created < lost
        posts = [e for e in emu.requests_log() if e["method"] == "POST"]
        assert len(posts) == 40 and all(
            e["status"] != 201 for e in posts if e["fault"] in ("500", "503", "429")
        )


def test_fail_rate_gives_error_lines():
    with EmulatorServer(
        "--fail-rate", "0.5", "--seed", "5", "--start-delay", "0", "--retry-base", "0.01"
    ) as emu:
        api = Api(emu)
        b = api.wait(api.batch([chat_line(i) for i in range(40)])["id"])
        c = b["request_counts"]
        assert c["completed"] + c["failed"] == 40 and 8 <= c["failed"] <= 32
        types = {json.loads(e["error"]["message"])["type"] for e in api.lines(b["error_file_id"])}
        assert types <= {"NonRetriableHttpStatus", "RetriableHttpStatus"} and types
        assert len(api.lines(b["output_file_id"])) == c["completed"]


def _failures_of_round(emu: EmulatorServer, round_: int) -> dict[str, int]:
    """custom_id -> HTTP status of each error line of the job's batch of that round, as the server wrote it."""
    get = lambda path: requests.get(f"{emu.base_url}/{path}", headers=emu.headers, timeout=30)  # noqa: E731
    (batch,) = [
        b for b in get("batches?limit=100").json()["data"] if b["metadata"]["dwb_round"] == str(round_)
    ]
    assert batch["status"] == "completed", batch
    if not batch["error_file_id"]:
        return {}
    lines = [json.loads(x) for x in get(f"files/{batch['error_file_id']}/content").text.splitlines()]
    return {e["custom_id"]: json.loads(e["error"]["message"])["details"]["status"] for e in lines}


def test_fail_rate_refuses_the_same_request_again_in_a_resubmit_round(tmp_path, h):
    """--fail-rate's 400 and 422 are the request's own, as on a real server: resent unchanged in a later
    batch (submit.py --resubmit), the same custom_ids are refused with the same status; its 500s are drawn
    per batch row, so most of them pass when resent. A changed request (a larger max_tokens) is judged
    afresh. Checked in the server's own error files."""
    with h.start_emulator("--fail-rate", "0.3", "--seed", "11", "--retry-base", "0.01") as emu:
        env = h.script_env(emu.base_url)
        job = h.submit_lines(tmp_path, h.chat_lines(60), env)
        h.poll_wait("--manifest", job.manifest, env=env, code=6)
        first = _failures_of_round(emu, 1)
        refused = {c: s for c, s in first.items() if s in (400, 422)}
        errors = {c for c, s in first.items() if s == 500}
        assert set(first.values()) == {400, 422, 500}, first

        code, res, err = h.run_script("submit", "--resubmit", "--manifest", job.manifest, env=env)
        assert code == 0 and res["resubmitted"] == len(first), (res, err)
        h.poll_wait("--manifest", job.manifest, env=env, code=6)
        second = _failures_of_round(emu, 2)
        assert {c: s for c, s in second.items() if s in (400, 422)} == refused  # every one, the same status
        assert set(second) - set(refused) < errors  # 500s again only among round 1's 500s: most pass

        # fetch says so: failed the same way twice, not worth resending as they are
        code, fetch, err = h.run_script("fetch_results", "--manifest", job.manifest, env=env)
        groups = {g["status"]: g for g in fetch["failure_groups"]}
        for status in (400, 422):
            assert groups[status]["persistent"] == groups[status]["count"], groups
            assert groups[status]["resubmit"] == "no", groups

        # with another body they are other requests, judged afresh: some of them pass
        code, res, err = h.run_script(
            "submit", "--resubmit", "--manifest", job.manifest, "--max-tokens", "300", env=env
        )
        assert code == 0 and res["resubmitted"] == len(second), (res, err)
        h.poll_wait("--manifest", job.manifest, env=env, code=None)
        third = _failures_of_round(emu, 3)
        assert set(refused) - set(third), (refused, third)
