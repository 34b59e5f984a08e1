"""The distribution registers its instrumentor where ``pc.instrument("anthropic")`` looks for it."""

from __future__ import annotations

import importlib.metadata

from paygentic_costs_anthropic import AnthropicInstrumentor


def test_registered_as_an_entry_point() -> None:
    (entry_point,) = [ep for ep in importlib.metadata.entry_points(group="paygentic_costs.integrations")
                      if ep.name == "anthropic"]
    assert entry_point.load() is AnthropicInstrumentor
    assert AnthropicInstrumentor.unavailable_reason() is None


def test_public_names() -> None:
    import paygentic_costs_anthropic

    assert paygentic_costs_anthropic.__all__ == ["AnthropicInstrumentor"]
    assert AnthropicInstrumentor.name == "anthropic"
    assert AnthropicInstrumentor.provider == "anthropic"
    assert AnthropicInstrumentor.default_event_type == "cost.ai.inference"
