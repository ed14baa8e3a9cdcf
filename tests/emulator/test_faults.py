"""Seeded fault injection (500/503/429/drop/truncate) on API calls, never on /healthz or /_emulator,
with some mutating calls taking effect before the reply is lost; and --fail-rate error lines."""

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
