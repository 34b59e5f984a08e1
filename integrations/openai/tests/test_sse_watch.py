"""Chat streams watched at the SSE seam: shapes the recorded fixture does not have (spaced JSON, several choices,
usage on a content chunk, a body without ``[DONE]``), each against the bare SDK's view of the same bytes."""

from __future__ import annotations

import gc
import importlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import openai
import pytest

import paygentic_costs as pc
from paygentic_costs.testing import Capture

MESSAGES = [{"role": "user", "content": "Hi"}]
USAGE = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100,
         "prompt_tokens_details": {"cached_tokens": 0}}
# gpt-4o-2024-08-06 in the pinned rate file: 1000 x 2.50 + 100 x 10.00 per million tokens.
AMOUNT = Decimal("0.0035")


def _chunk(choices: list[dict[str, Any]], usage: dict[str, Any] | None, *, compact: bool) -> bytes:
    body = {"id": "chatcmpl-sse", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o-2024-08-06",
            "service_tier": "default", "choices": choices, "usage": usage}
    text = json.dumps(body, separators=(",", ":")) if compact else json.dumps(body)
    return b"data: " + text.encode() + b"\n\n"


def _choice(index: int, content: str | None, finish: str | None = None) -> dict[str, Any]:
    delta = {"content": content} if content is not None else {}
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


# The HTTP library this openai version uses (httpx2 on 3.x, httpx before), as the conftest picks it.
httpx_mod = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])


class _Reads(httpx_mod.SyncByteStream, httpx_mod.AsyncByteStream):  # type: ignore[misc]
    """A body handed over in reads of ``size`` bytes (0: one event per read), as a network splits it."""

    def __init__(self, body: bytes, size: int) -> None:
        if size:
            self.reads = [body[at:at + size] for at in range(0, len(body), size)]
        else:
            self.reads = [event + b"\n\n" for event in body.split(b"\n\n") if event]

    def __iter__(self) -> Any:
        yield from self.reads

    async def __aiter__(self) -> Any:
        for read in self.reads:
            yield read


def _sdk(body: Callable[[bool], bytes], read_size: int | None = None, *, is_async: bool = False) -> Any:
    """A client whose chat streams are ``body(include_usage)``, in one read or in reads of ``read_size`` bytes."""

    def handler(request: Any) -> Any:
        asked = bool((json.loads(request.content).get("stream_options") or {}).get("include_usage"))
        headers = {"content-type": "text/event-stream"}
        if read_size is None:
            return httpx_mod.Response(200, headers=headers, content=body(asked))
        return httpx_mod.Response(200, headers=headers, stream=_Reads(body(asked), read_size))

    if is_async:
        return openai.AsyncOpenAI(api_key="test", base_url="http://fake.test/v1", max_retries=0,
                                  http_client=httpx_mod.AsyncClient(transport=httpx_mod.MockTransport(handler)))

    http_client = httpx_mod.Client(transport=httpx_mod.MockTransport(handler))
    return openai.OpenAI(api_key="test", base_url="http://fake.test/v1", max_retries=0, http_client=http_client)


def _bare_view(body: Callable[[bool], bytes], **kwargs: Any) -> list[dict[str, Any]]:
    pc.uninstrument("openai")
    try:
        return [c.model_dump() for c in _sdk(body).chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                                            stream=True, **kwargs)]
    finally:
        pc.instrument("openai")


@pytest.mark.parametrize("read_size", [None, 0, 7])
@pytest.mark.parametrize("compact", [True, False])
def test_two_choices_break_at_the_last_finish_is_billed_at_once(
    costs: Capture, compact: bool, read_size: int | None
) -> None:
    def body(asked: bool) -> bytes:
        return (_chunk([_choice(0, "a")], None, compact=compact) + _chunk([_choice(1, "b")], None, compact=compact)
                + _chunk([_choice(0, None, "stop")], None, compact=compact)
                + _chunk([_choice(1, None, "stop")], None, compact=compact)
                + (_chunk([], USAGE, compact=compact) if asked else b"") + b"data: [DONE]\n\n")

    expected = _bare_view(body)
    seen: list[dict[str, Any]] = []
    finished = 0
    with pc.customer("cus_1"):
        stream = _sdk(body, read_size).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        for chunk in stream:
            seen.append(chunk.model_dump())
            finished += sum(1 for choice in chunk.choices if choice.finish_reason is not None)
            if finished == 2:
                break  # neither [DONE] nor a later loop turn: the read-ahead saw the usage chunk
        assert [e.amount for e in costs.events] == [AMOUNT]
    assert seen == expected
    assert pc.stats()["usage_missing"] == 0


@pytest.mark.parametrize("compact", [True, False])
def test_usage_on_a_content_chunk_passes_through_and_is_billed(costs: Capture, compact: bool) -> None:
    # Some OpenAI-compatible servers put usage on the final content chunk (choices not empty) and send no [DONE].
    def body(asked: bool) -> bytes:
        return (_chunk([_choice(0, "a")], None, compact=compact)
                + _chunk([_choice(0, "b", "stop")], USAGE, compact=compact))

    expected = _bare_view(body)
    with pc.customer("cus_1"):
        chunks = [c.model_dump() for c in _sdk(body).chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                                              stream=True)]
    assert chunks == expected and chunks[-1]["usage"]["prompt_tokens"] == 1000
    assert [e.amount for e in costs.events] == [AMOUNT]


def _with_extra_tokens_key(chunk: bytes) -> bytes:
    """``chunk`` with a server's extra field holding a ``*_tokens`` key outside any usage object."""
    return chunk.replace(b'"choices"', b'"request": {"max_tokens": 7}, "choices"', 1)


@pytest.mark.parametrize("read_size", [None, 0, 64])
@pytest.mark.parametrize("compact", [True, False])
def test_running_usage_on_content_chunks_bills_the_usage_chunk_once(
    costs: Capture, compact: bool, read_size: int | None
) -> None:
    # Servers with continuous usage stats repeat running totals on every chunk, then send the usage-only chunk that
    # include_usage asks for: that one is the bill, and stays hidden, whatever the reads hold.
    def running(completion: int) -> dict[str, Any]:
        return {"prompt_tokens": 1000, "completion_tokens": completion, "total_tokens": 1000 + completion}

    def body(asked: bool) -> bytes:
        return (_chunk([_choice(0, "a")], running(40), compact=compact)
                + _chunk([_choice(0, "b", "stop")], running(90), compact=compact)
                + (_chunk([], USAGE, compact=compact) if asked else b"") + b"data: [DONE]\n\n")

    expected = _bare_view(body)
    with pc.customer("cus_1"):
        chunks = [c.model_dump() for c in _sdk(body, read_size).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)]
    assert chunks == expected and all(chunk["choices"] for chunk in chunks)
    assert [e.amount for e in costs.events] == [AMOUNT]  # USAGE's 1000 + 100, not a running total


@pytest.mark.parametrize("read_size", [None, 0])
@pytest.mark.parametrize("compact", [True, False])
def test_the_last_usage_is_billed_past_a_later_tokens_key_outside_usage(
    costs: Capture, compact: bool, read_size: int | None
) -> None:
    # No usage-only chunk (include_usage ignored): running totals, then a chunk whose only *_tokens key is a server's
    # extra field. The watcher searches from the end; that key is not usage, so it looks further back.
    def body(asked: bool) -> bytes:
        return (_chunk([_choice(0, "a")], {**USAGE, "completion_tokens": 10}, compact=compact)
                + _chunk([_choice(0, "b")], USAGE, compact=compact)
                + _with_extra_tokens_key(_chunk([_choice(0, None, "stop")], None, compact=compact))
                + b"data: [DONE]\n\n")

    expected = _bare_view(body)
    with pc.customer("cus_1"):
        chunks = [c.model_dump() for c in _sdk(body, read_size).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)]
    assert chunks == expected
    assert [e.amount for e in costs.events] == [AMOUNT]


def test_caller_asked_usage_sees_it_and_it_is_billed_once(costs: Capture) -> None:
    def body(asked: bool) -> bytes:
        return (_chunk([_choice(0, "a", "stop")], None, compact=False)
                + (_chunk([], USAGE, compact=False) if asked else b"") + b"data: [DONE]\n\n")

    options = {"stream_options": {"include_usage": True}}
    expected = _bare_view(body, **options)
    with pc.customer("cus_1"):
        chunks = [c.model_dump() for c in _sdk(body).chat.completions.create(model="gpt-4o", messages=MESSAGES,
                                                                              stream=True, **options)]
    assert chunks == expected and chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 100
    assert [e.amount for e in costs.events] == [AMOUNT]


def test_a_stream_never_iterated_counts_usage_missing_when_collected(costs: Capture) -> None:
    def body(asked: bool) -> bytes:
        return _chunk([_choice(0, "a", "stop")], None, compact=True) + b"data: [DONE]\n\n"

    with pc.customer("cus_1"):
        stream = _sdk(body).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        del stream
        gc.collect()
    assert costs.events == [] and pc.stats()["usage_missing"] == 1


def test_an_error_right_after_the_finish_chunk_comes_after_that_chunk(costs: Capture) -> None:
    # The watcher reads one event ahead after a finish chunk; a transport error there is raised on the caller's next
    # pull, after the finish chunk, as without instrumentation. No usage arrived: nothing is invented.
    def handler(request: Any) -> Any:
        def body() -> Any:
            yield _chunk([_choice(0, "a")], None, compact=True)
            yield _chunk([_choice(0, None, "stop")], None, compact=True)
            raise httpx_mod.ReadError("connection reset")

        return httpx_mod.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    sdk = openai.OpenAI(api_key="test", base_url="http://fake.test/v1", max_retries=0,
                        http_client=httpx_mod.Client(transport=httpx_mod.MockTransport(handler)))

    def read_all() -> tuple[list[str | None], type[BaseException]]:
        finishes: list[str | None] = []
        try:
            for chunk in sdk.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True):
                finishes.append(chunk.choices[0].finish_reason)
        except Exception as exc:  # the SDK's own error for it (openai 3.x wraps it, 1.66 does not)
            return finishes, type(exc)
        raise AssertionError("the stream did not fail")

    pc.uninstrument("openai")
    try:
        bare = read_all()
    finally:
        pc.instrument("openai")
    with pc.customer("cus_1"):
        assert read_all() == bare == ([None, "stop"], bare[1])
    assert costs.events == [] and pc.stats()["usage_missing"] == 1


@pytest.mark.parametrize("read_size", [0, 1, 7, 64])
@pytest.mark.parametrize("line_end", ["\n", "\r\n"])
async def test_any_split_of_the_body_gives_the_bare_chunks_and_one_event(
    costs: Capture, read_size: int, line_end: str
) -> None:
    # The watcher passes on whole events only and cuts our usage event out wherever the reads split it, for sync and
    # async streams, with LF or CRLF line ends.
    def body(asked: bool) -> bytes:
        data = (_chunk([_choice(0, "a")], None, compact=True) + _chunk([_choice(0, "b", "stop")], None, compact=False)
                + (_chunk([], USAGE, compact=True) if asked else b"") + b"data: [DONE]\n\n")
        return data.replace(b"\n", line_end.encode())

    expected = _bare_view(body)
    with pc.customer("cus_1"):
        sync_chunks = [c.model_dump() for c in _sdk(body, read_size).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)]
        stream = await _sdk(body, read_size, is_async=True).chat.completions.create(
            model="gpt-4o", messages=MESSAGES, stream=True)
        async_chunks = [c.model_dump() async for c in stream]
    assert sync_chunks == expected and async_chunks == expected and len(expected) == 2
    assert [e.amount for e in costs.events] == [AMOUNT, AMOUNT]
