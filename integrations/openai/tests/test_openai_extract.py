"""Pure extraction: SDK response types in, normalised ``Usage`` buckets out (no client, no runtime)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from openai.types import CompletionUsage, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseUsage
from paygentic_costs_openai._extract import (
    chat_usage,
    embeddings_usage,
    reported_from_result,
    responses_usage,
)
from paygentic_costs_openai._sse import ChatStreamWatch, reported_from_event

from paygentic_costs.instrumentation import Usage

FIXTURES = Path(__file__).parent / "fixtures"


def _load(name: str) -> dict:  # type: ignore[type-arg]
    return json.loads((FIXTURES / name).read_text())


def test_chat_fixture() -> None:
    completion = ChatCompletion.model_validate(_load("openai_chat.json"))
    assert chat_usage(completion.usage) == Usage(input_tokens=1117, output_tokens=9, cache_read_tokens=1024)
    reported = reported_from_result("chat.completions", completion)
    assert reported is not None
    assert (reported.model, reported.request_id, reported.service_tier) == (
        "gpt-4o-2024-08-06", "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "default")


def test_chat_reasoning_audio_and_cache_write_are_parts_of_the_totals() -> None:
    usage = CompletionUsage.model_validate({
        "prompt_tokens": 500, "completion_tokens": 300, "total_tokens": 800,
        "prompt_tokens_details": {"cached_tokens": 100, "audio_tokens": 50, "cache_write_tokens": 200},
        "completion_tokens_details": {"reasoning_tokens": 250, "audio_tokens": 20},
    })
    assert chat_usage(usage) == Usage(
        input_tokens=500, output_tokens=300, cache_read_tokens=100, cache_write_tokens=200,
        input_audio_tokens=50, reasoning_tokens=250, output_audio_tokens=20,
    )


def test_chat_without_details_and_without_usage() -> None:
    usage = CompletionUsage(prompt_tokens=3, completion_tokens=0, total_tokens=3)
    assert chat_usage(usage) == Usage(input_tokens=3, output_tokens=0)
    assert chat_usage(None) is None


def test_responses_fixture() -> None:
    # construct(), not model_validate(): the SDK parses responses leniently, and 1.66's types predate this fixture.
    data = _load("openai_responses.json")
    response = Response.construct(**{**data, "usage": ResponseUsage.construct(**data["usage"])})
    assert responses_usage(response.usage) == Usage(
        input_tokens=1536, output_tokens=612, cache_read_tokens=1280, reasoning_tokens=448)
    reported = reported_from_result("responses", response)
    assert reported is not None
    assert (reported.model, reported.service_tier) == ("gpt-5-2025-08-07", "default")
    assert reported.request_id == "resp_68af4030592c81938ec0a5fbab4a3e9f05438e46b5f69a3b"


def test_responses_usage_from_a_lenient_body() -> None:
    # OpenAI-compatible hosts omit fields the SDK types call required; non-strict parsing leaves them unset.
    usage = ResponseUsage.construct(input_tokens=7, output_tokens=2, total_tokens=9)
    assert responses_usage(usage) == Usage(input_tokens=7, output_tokens=2)
    assert responses_usage(None) is None


def test_embeddings_fixture() -> None:
    body = _load("openai_embeddings.json")
    body["data"][0]["embedding"] = [0.1, 0.2]  # the wire form is base64; the SDK decodes it before validation
    response = CreateEmbeddingResponse.model_validate(body)
    assert embeddings_usage(response) == Usage(input_tokens=8)
    reported = reported_from_result("embeddings", response)
    assert reported is not None and reported.model == "text-embedding-3-small"


def test_a_result_of_another_type_is_not_read() -> None:
    completion = ChatCompletion.model_validate(_load("openai_chat.json"))
    assert reported_from_result("responses", completion) is None
    assert reported_from_result("chat.completions", {"usage": {}}) is None


def test_only_the_usage_chunk_is_usage_only() -> None:
    # The stream watcher's reading of the recorded body: only the last data event is the usage-only one, it is cut
    # out (and nothing else), and its JSON reader agrees with the reader of the SDK's parsed model.
    body = (FIXTURES / "openai_chat_stream.sse").read_bytes()
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    watch = ChatStreamWatch(SimpleNamespace(), "site", hide=True)  # type: ignore[arg-type]  # reading only
    watch.ended = True  # nothing is finished here
    assert [watch.read_usage(e) for e in events] == [None] * (len(events) - 1) + [True]
    # OpenAI's compact usage-only event is kept as bytes, decoded when the call is priced (on the delivery worker).
    assert watch.scan(body) == body.replace(events[-1], b"") and watch.usage == events[-1]
    expected = Usage(input_tokens=1117, output_tokens=9, cache_read_tokens=1024)
    chunk = json.loads(events[-1][6:])
    reported = reported_from_event(events[-1])
    assert reported is not None and reported.usage == chat_usage(chunk["usage"]) == expected
    assert (reported.model, reported.request_id, reported.service_tier) == (
        chunk["model"], chunk["id"], chunk.get("service_tier")
    )
    assert chat_usage(ChatCompletionChunk.model_validate(chunk).usage) == expected
    assert watch.read_usage(b'data: {"choices": [], "usage": null}\n\n') is None


def test_a_usage_event_in_another_layout_is_decoded_at_once() -> None:
    # JSON with spaces (another server's encoder) is not the byte pattern the deferred path looks for: it is decoded
    # on the spot, as before, and still cut out and billed.
    spaced = (
        b'data: {"id": "c1", "model": "gpt-4o", "choices": [{"delta": {"content": "Hi"}, "finish_reason": null}]}\n\n'
        b'data: {"id": "c1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1}}'
        b"\n\n"
    )
    watch = ChatStreamWatch(SimpleNamespace(), "site", hide=True)  # type: ignore[arg-type]  # reading only
    watch.ended = True
    assert watch.scan(spaced) == spaced.split(b"\n\n")[0] + b"\n\n"
    assert watch.usage == {"prompt_tokens": 3, "completion_tokens": 1} and watch.model == "gpt-4o"


def test_usage_bytes_that_do_not_decode_report_nothing() -> None:
    assert reported_from_event(b'data: {"choices":[],"usage":{"prompt_tokens":\xff}}\n\n') is None
    assert reported_from_event(b'data: {"choices":[],"usage":{"prompt_tokens":1,\n\n') is None
    assert reported_from_event(b'data: {"choices":[],"usage":null}\n\n') is None
