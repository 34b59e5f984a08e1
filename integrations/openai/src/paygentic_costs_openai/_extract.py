"""Pure translation of OpenAI usage objects into :class:`paygentic_costs.Usage` (no I/O, no patching, no state).

The normal form (OpenTelemetry GenAI, as the core prices it): ``input_tokens`` is ALL input, with
``cache_read_tokens`` / ``cache_write_tokens`` / ``input_audio_tokens`` as parts of it; ``output_tokens`` is ALL
output, with ``reasoning_tokens`` / ``output_audio_tokens`` as parts of it. OpenAI already reports totals that way
(``prompt_tokens`` includes ``cached_tokens``, ``completion_tokens`` includes ``reasoning_tokens``), so the
translation is a renaming — no arithmetic that could double count.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

from openai.types import CompletionUsage, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseUsage

from paygentic_costs.instrumentation import Reported, Usage

__all__ = [
    "chat_usage",
    "detail",
    "embeddings_usage",
    "reported_from_chunk",
    "reported_from_result",
    "responses_usage",
]


def _positive(value: Any) -> int | None:
    # Detail fields are Optional and often 0; a 0 bucket carries no information, so it is left out of the event
    # rather than sent as ``cache_read_tokens: 0``. Non-int values (a proxy returning floats) are dropped, not guessed.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


def _count(value: Any) -> int | None:
    # Totals are required ints in the SDK types, but ``construct()`` (non-strict parsing) accepts any JSON; keep an
    # honest 0 for totals and refuse anything that is not a non-negative int.
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def detail(details: Any, name: str) -> Any:
    # Version branch: SDKs older than a field (e.g. ResponseUsage.input_tokens_details before 1.67) keep it as a plain
    # dict (the SDK models allow extra fields), so read dicts and models alike; a missing field reads None.
    if isinstance(details, dict):
        return details.get(name)
    return getattr(details, name, None)


def chat_usage(usage: CompletionUsage | Mapping[str, Any] | None) -> Usage | None:
    """Normalise a chat-completions usage: the SDK's ``CompletionUsage`` or the same object as decoded JSON.

    Args:
        usage: ``ChatCompletion.usage``, the final ``ChatCompletionChunk.usage``, or the ``usage`` of a stream's
            usage chunk read as JSON (``_sse``); None when absent.

    Returns:
        The normalised usage, or None when the provider reported none.
    """
    if usage is None:
        return None
    read = _reader(usage)
    prompt = _reader(read("prompt_tokens_details"))
    completion = _reader(read("completion_tokens_details"))
    return Usage(
        input_tokens=_count(read("prompt_tokens")),
        output_tokens=_count(read("completion_tokens")),
        cache_read_tokens=_positive(prompt("cached_tokens")),
        # ``cache_write_tokens`` appeared in late 2.x SDKs: None where the field is absent.
        cache_write_tokens=_positive(prompt("cache_write_tokens")),
        input_audio_tokens=_positive(prompt("audio_tokens")),
        reasoning_tokens=_positive(completion("reasoning_tokens")),
        output_audio_tokens=_positive(completion("audio_tokens")),
    )


_NOTHING: dict[str, Any] = {}


def _reader(details: Any) -> Callable[[str], Any]:
    """``detail(details, name)`` as a one-argument reader; for decoded JSON (every chat stream's usage, read on the
    delivery worker) it is the dict's own ``get``, with no Python frame per field."""
    if isinstance(details, dict):
        return details.get
    if details is None:
        return _NOTHING.get
    return functools.partial(detail, details)


def responses_usage(usage: ResponseUsage | dict[str, Any] | None) -> Usage | None:
    """Normalise a Responses-API ``ResponseUsage`` (non-streaming, or from ``response.completed``).

    Args:
        usage: ``Response.usage`` (a plain dict when an older SDK could not build the model); None for
            queued/in-progress background responses.

    Returns:
        The normalised usage, or None when the provider reported none.
    """
    if usage is None:
        return None
    # The details objects are typed as required, but non-strict parsing leaves them unset when a server omits
    # them (OpenAI-compatible hosts do); read them defensively.
    inp = detail(usage, "input_tokens_details")
    out = detail(usage, "output_tokens_details")
    return Usage(
        input_tokens=_count(detail(usage, "input_tokens")),
        output_tokens=_count(detail(usage, "output_tokens")),
        cache_read_tokens=_positive(detail(inp, "cached_tokens")),
        # Newer field (typed required since 3.x, absent on older servers and SDKs): None when missing.
        cache_write_tokens=_positive(detail(inp, "cache_write_tokens")),
        reasoning_tokens=_positive(detail(out, "reasoning_tokens")),
    )


def embeddings_usage(response: CreateEmbeddingResponse) -> Usage | None:
    """Normalise an embeddings response's usage (input tokens only).

    Args:
        response: The parsed ``CreateEmbeddingResponse``.

    Returns:
        The normalised usage, or None when the provider reported none.
    """
    usage = getattr(response, "usage", None)  # required in the type, but compatible hosts omit it
    if usage is None:
        return None
    return Usage(input_tokens=_count(usage.prompt_tokens))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def reported_from_result(operation: str, result: object) -> Reported | None:
    """Read usage, model, id and tier from a parsed (non-streaming) result of ``operation``.

    Args:
        operation: ``chat.completions``, ``responses`` or ``embeddings``.
        result: What the SDK returned (``ParsedChatCompletion`` / ``ParsedResponse`` are subclasses and match).

    Returns:
        The report, or None when the result is not the type this operation produces (a ``cast_to`` override).
    """
    if operation == "chat.completions" and isinstance(result, ChatCompletion):
        return Reported(chat_usage(result.usage), _str(result.model), _str(result.id), _str(result.service_tier))
    if operation == "responses" and isinstance(result, Response):
        # ``Response.service_tier`` exists since the Responses API shipped (1.66); getattr guards compatible hosts.
        tier = _str(getattr(result, "service_tier", None))
        return Reported(responses_usage(result.usage), _str(result.model), _str(result.id), tier)
    if operation == "embeddings" and isinstance(result, CreateEmbeddingResponse):
        # Embedding responses have no id: the SDK's documented ``_request_id`` (x-request-id header) stands in.
        return Reported(embeddings_usage(result), _str(result.model), _str(getattr(result, "_request_id", None)), None)
    return None


def reported_from_chunk(chunk: Any) -> Reported | None:
    """Read usage, model, id and tier from a chat stream chunk decoded from JSON (the usage event's).

    Args:
        chunk: The decoded ``data:`` of one event.

    Returns:
        The report, or None when the chunk is not an object with a ``usage`` object.
    """
    usage = chunk.get("usage") if type(chunk) is dict else None
    if type(usage) is not dict:  # JSON objects decode to dicts
        return None
    return Reported(chat_usage(usage), _str(chunk.get("model")), _str(chunk.get("id")), _str(chunk.get("service_tier")))
