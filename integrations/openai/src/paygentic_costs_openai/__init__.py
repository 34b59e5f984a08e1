"""paygentic-costs integration for the OpenAI Python SDK.

Records one cost event per billable OpenAI call — chat completions (``create``, ``parse``, ``stream``), Responses
(``create``, ``parse``, ``stream``) and embeddings, sync and async, including ``with_raw_response`` and
``with_streaming_response`` — priced from the usage the response reports. Prompts and completions are never read.

Example:
    >>> import paygentic_costs as pc
    >>> pc.instrument("openai")  # doctest: +SKIP

Importing this module does not import ``openai``: the core checks the installed version first, and the SDK is
imported only when :meth:`OpenAIInstrumentor.instrument` applies the patches.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from paygentic_costs.instrumentation import Instrumentor, Patch

__all__ = ["OpenAIInstrumentor"]


class OpenAIInstrumentor(Instrumentor):
    """Prices OpenAI SDK calls and records them as ``cost.ai.inference`` events (``data.provider = "openai"``).

    Enable it with ``pc.instrument("openai")`` (optionally ``event_type="..."``); ``pc.uninstrument("openai")``
    restores the SDK's original functions.
    """

    name: ClassVar[str] = "openai"
    distribution: ClassVar[str] = "openai"
    # 1.66.0: the first release with the Responses API; chat stream_options.include_usage is older (1.26).
    supported: ClassVar[str] = ">=1.66.0,<4"
    provider: ClassVar[str] = "openai"
    install_hint: ClassVar[str | None] = "pip install paygentic-costs-openai"

    def _patches(self) -> Iterable[Patch]:
        from ._patch import patches  # imports openai: only once the version check passed

        return patches(self)
