"""The stream hook skips the events StreamAccumulator.add ignores: pinned against add() itself, event type by type."""

from __future__ import annotations

import typing
from typing import Any

import pytest

anthropic = pytest.importorskip("anthropic")

from anthropic.types import RawMessageStreamEvent  # noqa: E402
from paygentic_costs_anthropic._extract import StreamAccumulator  # noqa: E402
from paygentic_costs_anthropic._stream import _observer  # noqa: E402

MESSAGE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [],
    "stop_reason": None,
    "stop_sequence": None,
    "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 4, "service_tier": "standard"},
}
DELTA_USAGE = {"output_tokens": 7, "input_tokens": 12}


def _event_classes() -> list[type[Any]]:
    union = typing.get_args(RawMessageStreamEvent)[0]  # Annotated[Union[...], discriminator]
    return list(typing.get_args(union))


def _event(cls: type[Any]) -> Any:
    (kind,) = typing.get_args(cls.model_fields["type"].annotation)
    fields: dict[str, Any] = {"type": kind}
    if kind == "message_start":
        fields["message"] = anthropic.types.Message.model_validate(MESSAGE)
    elif kind == "message_delta":
        fields["usage"] = anthropic.types.MessageDeltaUsage.model_validate(DELTA_USAGE)
        fields["delta"] = {"stop_reason": "end_turn", "stop_sequence": None}
    return cls.model_construct(**fields)


def _state(accumulator: StreamAccumulator) -> tuple[Any, ...]:
    info = accumulator.result()
    return info.usage, info.model, info.request_id, info.service_tier, accumulator.seen_usage


def test_every_sdk_event_type_leaves_the_same_state_as_add() -> None:
    events = [_event(cls) for cls in _event_classes()]
    assert {e.type for e in events} >= {"message_start", "message_delta", "content_block_delta"}
    # Every order of one event of each kind, plus dict events (decoded JSON) and an unknown type.
    extra = [
        {"type": "message_start", "message": MESSAGE},
        {"type": "message_delta", "usage": DELTA_USAGE},
        {"type": "ping"},
    ]
    for sequence in (events, events[::-1], [*events, *extra], extra):
        direct, observed = StreamAccumulator(), StreamAccumulator()
        on_chunk = _observer(observed.add)
        for event in sequence:
            direct.add(event)
            on_chunk(event)
            assert _state(observed) == _state(direct), event


def test_the_skipped_event_types_are_ignored_by_add() -> None:
    # The premise of the shortcut: add() changes nothing for any other event type the SDK defines.
    fresh = _state(StreamAccumulator())
    for cls in _event_classes():
        event = _event(cls)
        if event.type in ("message_start", "message_delta"):
            continue
        accumulator = StreamAccumulator()
        accumulator.add(event)
        assert _state(accumulator) == fresh, event.type
