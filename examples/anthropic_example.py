"""Anthropic: every Messages API call made for a customer becomes one priced cost event.

Run it against Anthropic (ANTHROPIC_API_KEY) or any compatible endpoint (ANTHROPIC_BASE_URL). With no
PAYGENTIC_API_KEY the events are printed to stderr instead of being sent to Paygentic.
"""

from __future__ import annotations

import anthropic

import paygentic_costs as pc

# Your negotiated prices win over the bundled catalog (here: Sonnet 4.5 list prices, per million tokens).
RATES = {
    "currency": "USD",
    "llm": {
        "anthropic:claude-sonnet-4-5": {
            "input_per_mtok": "3",
            "output_per_mtok": "15",
            "cache_read_per_mtok": "0.30",
            "cache_write_per_mtok": "3.75",
            "cache_write_1h_per_mtok": "6",
            "web_search_per_request": "0.01",
        }
    },
}

pc.configure(source="https://api.myapp.com", rates=RATES)
pc.instrument("anthropic")  # clients created before or after this line are covered

client = anthropic.Anthropic(max_retries=0)
MODEL = "claude-sonnet-4-6"
PROMPT: list[anthropic.types.MessageParam] = [{"role": "user", "content": "Say hello."}]


def answer(job_id: str, customer_id: str) -> str:
    """One customer request: a plain call and a streamed one, both billed to ``customer_id``."""
    with pc.job(job_id, customer=customer_id):
        first = client.messages.create(model=MODEL, max_tokens=64, messages=PROMPT)
        with client.messages.stream(model=MODEL, max_tokens=64, messages=PROMPT) as stream:
            second = "".join(stream.text_stream)
    text = "".join(block.text for block in first.content if isinstance(block, anthropic.types.TextBlock))
    return f"{text} / {second}"


if __name__ == "__main__":
    print(answer("job_anthropic_1", "cus_abc123"))
    delivered = pc.flush(timeout=10)
    stats = pc.stats()
    print(f"delivered={delivered} recorded={stats['recorded']} usage_missing={stats['usage_missing']}")
