"""paygentic-costs integration for the ``anthropic`` SDK: every Messages API request becomes one priced cost event.

Covered: ``messages.create`` (with and without ``stream=True``), ``messages.stream()``, ``messages.parse()`` and the
same under ``beta.messages``, sync and async, on every client (``Anthropic``, ``AsyncAnthropic``, Bedrock and Vertex
clients, ``with_options()`` copies), including clients created before ``instrument()``::

    import paygentic_costs as pc

    pc.configure()
    pc.instrument("anthropic")          # or instrument("anthropic", event_type="cost.llm")

Events carry ``data.provider = "anthropic"``, ``data.operation = "messages"``, the model as reported, the token
buckets (all input in ``input_tokens``; cache reads, 5-minute and 1-hour cache writes as parts of it; web searches)
and ``data.request_id`` (the ``msg_…`` id). Prompts and completions are never read into events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from paygentic_costs.instrumentation import Instrumentor, Patch

__all__ = ["AnthropicInstrumentor"]


class AnthropicInstrumentor(Instrumentor):
    """Patches the ``anthropic`` SDK's Messages API globally (revertible with ``uninstrument()``)."""

    name: ClassVar[str] = "anthropic"
    distribution: ClassVar[str] = "anthropic"
    # 1.0 is the floor: it has every field and method read here (messages.parse, the cache_creation TTL breakdown,
    # server_tool_use, the stream managers' _raw_stream). 0.x is excluded on purpose: its Stream metaclass makes
    # isinstance(stream, anthropic.Stream) False for any proxy, and with_raw_response returned a legacy response type.
    supported: ClassVar[str] = ">=1.0,<3"
    provider: ClassVar[str] = "anthropic"
    install_hint: ClassVar[str | None] = "pip install 'paygentic-costs-anthropic'"

    def _patches(self) -> Iterable[Patch]:
        # Imported here: the SDK is imported only once instrument() has checked it is installed and in range.
        from ._patch import patches

        return patches(self)
