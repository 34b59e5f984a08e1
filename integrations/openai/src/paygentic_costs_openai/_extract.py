"""Pure translation of OpenAI usage objects into :class:`paygentic_costs.Usage` (no I/O, no patching, no state).

The normal form (OpenTelemetry GenAI, as the core prices it): ``input_tokens`` is ALL input, with
``cache_read_tokens`` / ``cache_write_tokens`` / ``input_audio_tokens`` as parts of it; ``output_tokens`` is ALL
output, with ``reasoning_tokens`` / ``output_audio_tokens`` as parts of it. OpenAI already reports totals that way
(``prompt_tokens`` includes ``cached_tokens``, ``completion_tokens`` includes ``reasoning_tokens``), so the
translation is a renaming — no arithmetic that could double count.
"""

from __future__ import annotations

from typing import Any

from openai.types import CompletionUsage, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response, ResponseUsage

from paygentic_costs.instrumentation import Usage

__all__ = [
    "Reported",
    "chat_usage",
    "detail",
    "embeddings_usage",
    "reported_from_result",
    "responses_usage",
]


def _positive(value: Any) -> int | None:
    # Detail fields are Optional and often 0; a 0 bucket carries no information, so it is left out of the event
    # rather than sent as ``cache_read_tokens: 0``. Non-int values (a proxy returning floats) are dropped, not guessed.
    if value is None:
        return None
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        return value if value > 0 else None
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


def chat_usage(usage: CompletionUsage | None) -> Usage | None:
    """Normalise a chat-completions ``CompletionUsage`` (also the usage chunk of a stream).

    Args:
        usage: ``ChatCompletion.usage`` or the final ``ChatCompletionChunk.usage``; None when absent.

    Returns:
        The normalised usage, or None when the provider reported none.
    """
    if usage is None:
        return None
    # One call per request: straight-line reads; the helpers run only for a value that is not a plain int.
    prompt = usage.prompt_tokens_details
    completion = usage.completion_tokens_details
    input_tokens = usage.prompt_tokens
    output_tokens = usage.completion_tokens
    if type(input_tokens) is not int or input_tokens < 0:
        input_tokens = _count(input_tokens)
    if type(output_tokens) is not int or output_tokens < 0:
        output_tokens = _count(output_tokens)
    cache_read = cache_write = audio_in = reasoning = audio_out = None
    if prompt is not None:
        cache_read = prompt.cached_tokens
        if type(cache_read) is not int or cache_read <= 0:
            cache_read = _positive(cache_read)
        # ``cache_write_tokens`` appeared in late 2.x SDKs; older versions (field absent) read None.
        cache_write = _positive(detail(prompt, "cache_write_tokens"))
        audio_in = prompt.audio_tokens
        if type(audio_in) is not int or audio_in <= 0:
            audio_in = _positive(audio_in)
    if completion is not None:
        reasoning = completion.reasoning_tokens
        if type(reasoning) is not int or reasoning <= 0:
            reasoning = _positive(reasoning)
        audio_out = completion.audio_tokens
        if type(audio_out) is not int or audio_out <= 0:
            audio_out = _positive(audio_out)
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        input_audio_tokens=audio_in,
        reasoning_tokens=reasoning,
        output_audio_tokens=audio_out,
    )


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


class Reported:
    """What a finished OpenAI call reported: the usage plus the keys that select its price.

    Attributes:
        usage: Normalised usage, or None when the response carried none.
        model: The model the response reports (the served snapshot), or None.
        request_id: The response id (``chatcmpl-…``, ``resp_…``), else the ``x-request-id`` header.
        service_tier: The tier that actually served the call (``flex`` / ``priority`` select their prices).
    """

    __slots__ = ("model", "request_id", "service_tier", "usage")

    def __init__(
        self, usage: Usage | None, model: str | None, request_id: str | None, service_tier: str | None
    ) -> None:
        self.usage = usage
        self.model = model
        self.request_id = request_id
        self.service_tier = service_tier


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
        model, request_id, tier = result.model, result.id, result.service_tier
        return Reported(
            chat_usage(result.usage),
            model if type(model) is str and model else _str(model),
            request_id if type(request_id) is str and request_id else _str(request_id),
            tier if type(tier) is str and tier else _str(tier),
        )
    if operation == "responses" and isinstance(result, Response):
        # ``Response.service_tier`` exists since the Responses API shipped (1.66); getattr guards compatible hosts.
        tier = _str(getattr(result, "service_tier", None))
        return Reported(responses_usage(result.usage), _str(result.model), _str(result.id), tier)
    if operation == "embeddings" and isinstance(result, CreateEmbeddingResponse):
        # Embedding responses have no id: the SDK's documented ``_request_id`` (x-request-id header) stands in.
        return Reported(embeddings_usage(result), _str(result.model), _str(getattr(result, "_request_id", None)), None)
    return None
