"""The built-in model where clients trip on real ones: output budgets (`finish_reason` length/stop, usage
that agrees with the text), reasoning models, tool calls, embeddings of the real size, image parts, and
the optional sloppy model. Everything is read over HTTP as a client sees it."""

from __future__ import annotations

import base64
import json
import math
import struct

import jsonschema
import openai
import pytest
from conftest import CHAT, EMBED, chat_line, jsonl
from emulator_server import EmulatorServer

GPT_OSS = "openai/gpt-oss-20b"
QWEN3 = "Qwen/Qwen3-14B-FP8"  # a hybrid reasoning model: `none` switches it off
VISION = "Qwen/Qwen3-VL-30B-A3B-Instruct-FP8"
LONG = "Tell me everything about the history of the printing press in Europe, with dates and names."


def tokens(text: str | None) -> int:
    """The emulator's documented tokenizer: one token per four characters started."""
    return math.ceil(len(text or "") / 4)


def chat(api, model: str = CHAT, content: str = LONG, **body) -> dict:
    r = api.post(
        "/chat/completions", json={"model": model, "messages": [{"role": "user", "content": content}], **body}
    )
    assert r.status_code == 200, r.text
    return r.json()


def assert_usage_agrees(resp: dict) -> None:
    message, usage = resp["choices"][0]["message"], resp["usage"]
    reasoning = tokens(message.get("reasoning_content"))
    args = sum(tokens(c["function"]["arguments"]) for c in message.get("tool_calls") or [])
    assert usage["completion_tokens"] == tokens(message["content"]) + reasoning + args
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    if "completion_tokens_details" in usage:
        assert usage["completion_tokens_details"]["reasoning_tokens"] == reasoning


# -- budgets -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_a_small_budget_cuts_the_answer_with_finish_reason_length(api, field):
    resp = chat(api, **{field: 5})
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "length"
    assert 0 < resp["usage"]["completion_tokens"] <= 5 and tokens(choice["message"]["content"]) <= 5
    assert_usage_agrees(resp)
    roomy = chat(api, max_tokens=500)
    assert roomy["choices"][0]["finish_reason"] == "stop"
    assert roomy["choices"][0]["message"]["content"].startswith(choice["message"]["content"])
    assert_usage_agrees(roomy)


def test_every_endpoint_honours_its_budget_field(api):
    r = api.post("/completions", json={"model": CHAT, "prompt": LONG, "max_tokens": 4}).json()
    assert r["choices"][0]["finish_reason"] == "length" and tokens(r["choices"][0]["text"]) <= 4
    assert r["usage"]["completion_tokens"] == tokens(r["choices"][0]["text"])
    r = api.post("/responses", json={"model": CHAT, "input": LONG, "max_output_tokens": 6}).json()
    assert r["status"] == "incomplete" and r["incomplete_details"] == {"reason": "max_output_tokens"}
    text = r["output"][-1]["content"][0]["text"]
    assert r["usage"]["output_tokens"] == tokens(text) <= 6
    r = api.post(
        "/messages", json={"model": CHAT, "max_tokens": 3, "messages": [{"role": "user", "content": LONG}]}
    ).json()
    assert r["stop_reason"] == "max_tokens" and r["usage"]["output_tokens"] <= 3


def test_structured_answers_are_bounded_too(api):
    schema = {"type": "object", "properties": {"summary": {"type": "string"}}, "required": ["summary"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "s", "schema": schema}}
    resp = chat(api, response_format=fmt, max_tokens=4)
    assert resp["choices"][0]["finish_reason"] == "length"
    with pytest.raises(ValueError):  # cut JSON, as a real model's: the client must look at finish_reason
        json.loads(resp["choices"][0]["message"]["content"])


def test_a_stop_sequence_ends_the_answer_before_it(api):
    resp = chat(api, content="alpha beta gamma delta", stop=["gamma"])
    choice = resp["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["content"].endswith("alpha beta ")
    assert_usage_agrees(resp)
    body = {
        "model": CHAT,
        "max_tokens": 100,
        "stop_sequences": ["gamma"],
        "messages": [{"role": "user", "content": "alpha beta gamma"}],
    }
    m = api.post("/messages", json=body).json()
    assert (m["stop_reason"], m["stop_sequence"]) == ("stop_sequence", "gamma")
    assert m["content"][0]["text"].endswith("alpha beta ")


def test_budgets_hold_in_batches(api):
    lines = [chat_line(i, LONG, max_tokens=5) for i in range(3)] + [
        chat_line(9, LONG, model=GPT_OSS, max_tokens=8)
    ]
    b = api.wait(api.batch(lines)["id"])
    out = {x["custom_id"]: x["response"]["body"] for x in api.lines(b["output_file_id"])}
    for i in range(3):
        assert out[f"req-{i}"]["choices"][0]["finish_reason"] == "length"
        assert out[f"req-{i}"]["usage"]["completion_tokens"] <= 5
    oss = out["req-9"]["choices"][0]
    assert (
        oss["message"]["content"] == ""
        and oss["message"]["reasoning_content"]
        and oss["finish_reason"] == "length"
    )


# -- reasoning ---------------------------------------------------------------------------------------
def test_reasoning_uses_the_budget_first(api):
    resp = chat(api, GPT_OSS, max_tokens=8)
    message, choice = resp["choices"][0]["message"], resp["choices"][0]
    assert message["content"] == "" and tokens(message["reasoning_content"]) == 8
    assert choice["finish_reason"] == "length"
    assert resp["usage"]["completion_tokens_details"]["reasoning_tokens"] == 8
    roomy = chat(api, GPT_OSS, max_tokens=2000)
    message = roomy["choices"][0]["message"]
    assert message["content"].startswith("Echo from openai/gpt-oss-20b") and message["reasoning_content"]
    assert roomy["choices"][0]["finish_reason"] == "stop"
    assert (
        roomy["usage"]["completion_tokens_details"]["reasoning_tokens"]
        == tokens(message["reasoning_content"])
        > 8
    )
    assert_usage_agrees(roomy)


def test_reasoning_effort_changes_the_amount_and_none_turns_it_off(api):
    amount = {
        effort: chat(api, QWEN3, reasoning_effort=effort)["usage"]["completion_tokens_details"][
            "reasoning_tokens"
        ]
        for effort in ("low", "medium", "high")
    }
    assert 0 < amount["low"] < amount["medium"] < amount["high"]
    off = chat(api, QWEN3, reasoning_effort="none")
    assert "reasoning_content" not in off["choices"][0]["message"]
    assert off["usage"]["completion_tokens_details"]["reasoning_tokens"] == 0
    plain = chat(api, CHAT)  # not a reasoning model by default
    assert "reasoning_content" not in plain["choices"][0]["message"]


def test_gpt_oss_cannot_switch_reasoning_off(api):
    r = api.post(
        "/chat/completions",
        json={"model": GPT_OSS, "messages": [{"role": "user", "content": "x"}], "reasoning_effort": "none"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["message"] == (
        "Reasoning effort 'none' is not supported by this provider. Supported values: low, medium, high."
    )


def test_responses_and_messages_carry_reasoning(api):
    r = api.post(
        "/responses", json={"model": GPT_OSS, "input": "why?", "reasoning": {"effort": "low"}}
    ).json()
    kinds = [o["type"] for o in r["output"]]
    assert kinds == ["reasoning", "message"]
    assert (
        r["usage"]["output_tokens_details"]["reasoning_tokens"]
        == tokens(r["output"][0]["content"][0]["text"])
        > 0
    )
    m = api.post(
        "/messages",
        json={"model": GPT_OSS, "max_tokens": 500, "messages": [{"role": "user", "content": "why?"}]},
    ).json()
    assert [c["type"] for c in m["content"]] == ["thinking", "text"]


def test_models_list_reasoning_efforts():
    with EmulatorServer("--reasoning-models", f"{GPT_OSS},{CHAT}") as emu:
        import requests

        listed = requests.get(
            emu.base_url + "/models", params={"include_reasoning_capabilities": "true"}, headers=emu.headers
        ).json()
        efforts = {m["id"]: m["supported_reasoning_efforts"] for m in listed["data"]}
        assert efforts[GPT_OSS] == ["low", "medium", "high"]
        assert efforts[CHAT] == efforts[QWEN3] == ["none", "low", "medium", "high"]  # reasoning here or not
        assert VISION in efforts  # the vision model is served by default
        body = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
        r = requests.post(emu.base_url + "/chat/completions", json=body, headers=emu.headers).json()
        assert r["choices"][0]["message"]["reasoning_content"]  # --reasoning-models made it reason
        plain = requests.get(emu.base_url + "/models", headers=emu.headers).json()["data"][0]
        assert "supported_reasoning_efforts" not in plain


def test_the_default_list_gives_each_model_its_familys_efforts_and_they_are_what_is_accepted(api):
    """doubleword-api.md 4.5: the server turns a Qwen model's effort into its chat template's thinking flag
    (``none`` switches it off), gpt-oss always reasons; the listing and the upload check agree, for
    Qwen/Qwen3.5-9B too (SKILL.md's examples pass ``--reasoning-effort none`` with it)."""
    listed = api.get("/models", params={"include_reasoning_capabilities": "true"}).json()["data"]
    efforts = {m["id"]: m["supported_reasoning_efforts"] for m in listed}
    hybrid = ["none", "low", "medium", "high"]
    assert efforts == {
        CHAT: hybrid,
        "Qwen/Qwen3.5-4B": hybrid,
        QWEN3: hybrid,
        VISION: [],  # an Instruct model: no thinking to switch
        GPT_OSS: ["low", "medium", "high"],
        "Qwen/Qwen3-Embedding-8B": [],
    }
    for model, effort in ((CHAT, "none"), (CHAT, "high"), (GPT_OSS, "low")):
        r = api.upload(jsonl([chat_line(1, model=model, reasoning_effort=effort)]))
        assert r.status_code == 201, (model, effort, r.text)
    r = api.upload(jsonl([chat_line(1, reasoning_effort="minimal")]))
    assert (r.status_code, r.text) == (
        400,
        "Line 1: Reasoning effort 'minimal' is not supported by this provider. Supported values: none, low, "
        "medium, high.",
    )
    r = api.upload(jsonl([chat_line(1, model=VISION, reasoning_effort="turbo")]))  # no control: the 7 levels
    assert r.status_code == 400 and r.text.endswith(
        "Supported values: none, minimal, low, medium, high, xhigh, max."
    )
    answer = chat(api, reasoning_effort="none")["choices"][0]["message"]
    assert answer["content"] and not answer.get("reasoning_content")


def test_the_openai_sdk_reads_reasoning_and_streams_it(emu):
    client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
    resp = client.chat.completions.create(
        model=GPT_OSS, messages=[{"role": "user", "content": "hi"}], max_tokens=400
    )
    assert resp.choices[0].message.content and resp.usage.completion_tokens_details.reasoning_tokens > 0
    stream = client.chat.completions.create(
        model=GPT_OSS, messages=[{"role": "user", "content": "hi"}], stream=True
    )
    parts = [c.choices[0].delta for c in stream if c.choices]
    assert "".join(p.content or "" for p in parts) == resp.choices[0].message.content
    assert "".join(getattr(p, "reasoning_content", None) or "" for p in parts)


# -- tools -------------------------------------------------------------------------------------------
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "minLength": 2},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
SEARCH = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]},
    },
}


def test_tool_calls_are_valid_for_the_tool_parameters(emu):
    client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
    for i in range(10):
        resp = client.chat.completions.create(
            model=CHAT,
            messages=[{"role": "user", "content": f"get_weather in city {i}"}],
            tools=[SEARCH, WEATHER],
        )
        choice = resp.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        assert call.function.name == "get_weather"  # the tool the user named
        jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])


def test_tool_choice_none_named_and_after_a_tool_result(api):
    messages = [{"role": "user", "content": "what now"}]
    assert (
        chat(api, content="x", tools=[WEATHER], tool_choice="none")["choices"][0]["finish_reason"] == "stop"
    )
    forced = chat(
        api,
        content="x",
        tools=[WEATHER, SEARCH],
        tool_choice={"type": "function", "function": {"name": "search"}},
    )
    assert forced["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "search"
    call = forced["choices"][0]["message"]["tool_calls"][0]
    messages += [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny, 21C"},
    ]
    r = api.post("/chat/completions", json={"model": CHAT, "messages": messages, "tools": [WEATHER]}).json()
    assert (
        r["choices"][0]["finish_reason"] == "stop" and "sunny, 21C" in r["choices"][0]["message"]["content"]
    )


def test_tool_calls_in_the_responses_and_messages_shapes(api):
    params = WEATHER["function"]["parameters"]
    r = api.post(
        "/responses",
        json={
            "model": CHAT,
            "input": "weather?",
            "tools": [{"type": "function", "name": "get_weather", "parameters": params}],
        },
    ).json()
    (call,) = [o for o in r["output"] if o["type"] == "function_call"]
    jsonschema.validate(json.loads(call["arguments"]), params)
    m = api.post(
        "/messages",
        json={
            "model": CHAT,
            "max_tokens": 200,
            "messages": [{"role": "user", "content": "weather?"}],
            "tools": [{"name": "get_weather", "input_schema": params}],
        },
    ).json()
    assert m["stop_reason"] == "tool_use"
    jsonschema.validate(next(c for c in m["content"] if c["type"] == "tool_use")["input"], params)


# -- embeddings and images ---------------------------------------------------------------------------
def test_embeddings_have_the_real_size_and_honour_dimensions(api):
    r = api.post("/embeddings", json={"model": EMBED, "input": "hello"}).json()
    vec = r["data"][0]["embedding"]
    assert len(vec) == 4096 and abs(sum(v * v for v in vec) - 1) < 1e-3
    small = api.post("/embeddings", json={"model": EMBED, "input": "hello", "dimensions": 256}).json()
    assert len(small["data"][0]["embedding"]) == 256
    b64 = api.post("/embeddings", json={"model": EMBED, "input": "hello", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<4096f", base64.b64decode(b64["data"][0]["embedding"]))
    assert max(abs(a - b) for a, b in zip(decoded, vec, strict=True)) < 1e-6
    too_big = api.post("/embeddings", json={"model": EMBED, "input": "hello", "dimensions": 5000})
    assert too_big.status_code == 400 and "4096" in too_big.json()["error"]["message"]


def test_embeddings_in_a_batch_are_4096_numbers(api):
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": EMBED, "input": f"t{i}"},
        }
        for i in range(3)
    ]
    b = api.wait(api.batch(lines, endpoint="/v1/embeddings")["id"])
    for line in api.lines(b["output_file_id"]):
        assert len(line["response"]["body"]["data"][0]["embedding"]) == 4096


IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}


def test_image_parts_are_accepted_and_counted(api):
    text = {"type": "text", "text": "What is in this picture?"}
    plain = chat(api, VISION, content=[text])
    one = chat(api, VISION, content=[text, IMAGE])
    two = chat(api, VISION, content=[text, IMAGE, IMAGE])
    step = one["usage"]["prompt_tokens"] - plain["usage"]["prompt_tokens"]
    assert step > 0 and two["usage"]["prompt_tokens"] - one["usage"]["prompt_tokens"] == step
    assert "[2 images]" in two["choices"][0]["message"]["content"]
    r = api.post(
        "/chat/completions", json={"model": GPT_OSS, "messages": [{"role": "user", "content": [text, IMAGE]}]}
    )
    assert r.status_code == 400 and "not a multimodal model" in r.json()["error"]["message"]


# -- the sloppy model --------------------------------------------------------------------------------
def test_the_sloppy_model_spoils_a_share_of_answers():
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
    kinds: dict[str, int] = {}
    with EmulatorServer("--sloppy-rate", "0.5") as emu:
        import requests

        for i in range(60):
            body = {
                "model": CHAT,
                "messages": [{"role": "user", "content": f"item {i}"}],
                "response_format": fmt,
                "max_tokens": 256,
            }
            r = requests.post(emu.base_url + "/chat/completions", json=body, headers=emu.headers).json()
            content, finish = r["choices"][0]["message"]["content"], r["choices"][0]["finish_reason"]
            if content.startswith("```json\n") and content.endswith("\n```"):
                kind = "fence"
            elif finish == "length":
                kind = "cut"
            else:
                try:
                    json.loads(content)
                    kind = "clean"
                except ValueError:
                    kind = "prose"
            kinds[kind] = kinds.get(kind, 0) + 1
        assert emu.configure(sloppy_rate=0)["sloppy_rate"] == 0
        r = requests.post(emu.base_url + "/chat/completions", json=body, headers=emu.headers).json()
        json.loads(r["choices"][0]["message"]["content"])
    assert set(kinds) == {"clean", "fence", "prose", "cut"}
    assert 15 <= kinds["clean"] <= 45


@pytest.mark.parametrize("structured", [False, True], ids=["text", "json"])
def test_a_sloppy_answer_cut_at_max_tokens_comes_whole_with_a_larger_one(structured):
    """A cut-off answer is a length limit, as with a real model: the same request with a larger
    max_tokens gets the whole answer (finish stop; JSON that parses), the same start as the cut one."""
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    fmt = {"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}

    def ask(emu, i, budget):
        body = {"model": CHAT, "messages": [{"role": "user", "content": f"item {i}"}], "max_tokens": budget}
        if structured:
            body["response_format"] = fmt
        r = requests.post(emu.base_url + "/chat/completions", json=body, headers=emu.headers).json()
        return r["choices"][0], r["usage"]

    import requests

    cut = 0
    with EmulatorServer("--sloppy-rate", "0.5") as emu:
        for i in range(40):
            first, usage = ask(emu, i, 256)
            if first["finish_reason"] != "length":
                continue
            cut += 1
            assert usage["completion_tokens"] == 256
            again, _ = ask(emu, i, 256)
            assert again == first  # the same model and prompt: cut the same way
            whole, usage = ask(emu, i, 1000)
            content = whole["message"]["content"]
            assert whole["finish_reason"] == "stop" and 256 < usage["completion_tokens"] <= 800
            assert content.startswith(first["message"]["content"])
            if structured:
                assert isinstance(json.loads(content)["n"], int)
    assert cut >= 3  # the case was seen


@pytest.mark.parametrize(
    "messages, budget",
    [
        ([{"role": "user", "content": "hello é 😀"}], None),
        ([{"role": "system", "content": "short"}, {"role": "user", "content": LONG}], 5),
        (
            [
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "b"},
                {"content": 'c "q" \\'},
            ],
            0,
        ),
    ],
)
def test_plain_requests_answer_exactly_as_the_general_path(api, messages, budget):
    """Plain chat requests take a fast path (for the batch rate); a no-op `tools: []` takes the general
    one: a client sees the same answer either way."""
    body = {"model": CHAT, "messages": messages, **({"max_tokens": budget} if budget is not None else {})}
    fast = api.post("/chat/completions", json=body).json()
    general = api.post("/chat/completions", json={**body, "tools": []}).json()
    for key in ("choices", "usage", "model", "object"):
        assert fast[key] == general[key]


def test_the_openai_sdk_parses_structured_answers_into_pydantic_models(emu):
    from typing import Literal

    import pydantic

    class Address(pydantic.BaseModel):
        city: str
        zip: str = pydantic.Field(pattern=r"^[0-9]{5}$")

    class Person(pydantic.BaseModel):
        name: str
        age: int = pydantic.Field(ge=0, le=120)
        mood: Literal["happy", "sad"]
        address: Address  # a $ref into $defs in the schema the SDK sends
        nick: str | None
        tags: list[str]

    client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
    people = []
    for i in range(8):
        r = client.chat.completions.parse(
            model=CHAT, messages=[{"role": "user", "content": f"describe person {i}"}], response_format=Person
        )
        people.append(r.choices[0].message.parsed)
    assert all(isinstance(p, Person) for p in people)
    assert len({p.mood for p in people}) == 2 and len({p.age for p in people}) > 1
