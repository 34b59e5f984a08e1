"""Price OpenAI calls per customer: instrument the SDK, call it inside a job, look at the cost events.

Run against the real API (OPENAI_API_KEY) or any OpenAI-compatible endpoint:

    OPENAI_BASE_URL=http://127.0.0.1:8080/v1 OPENAI_API_KEY=test python examples/openai_example.py

Events are captured locally and printed (nothing is sent to Paygentic); the prices come from a small rate file.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import openai

import paygentic_costs as pc
from paygentic_costs.export import InMemoryExporter
from paygentic_costs.testing import capture

RATES = """
currency = "USD"
[llm."openai:gpt-4o"]
input_per_mtok = "2.50"
cache_read_per_mtok = "1.25"
output_per_mtok = "10.00"
"""


def main() -> None:
    state = Path(tempfile.mkdtemp(prefix="paygentic-costs-example-"))
    (state / "rates.toml").write_text(RATES)
    pc.configure(rates=state / "rates.toml", exporter=InMemoryExporter(), state_dir=state)
    pc.instrument("openai")

    client = openai.OpenAI(max_retries=0)  # reads OPENAI_API_KEY and OPENAI_BASE_URL
    with capture() as costs, pc.job("job_example_1", customer="cus_example"):
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}]
        )
        print("reply:", reply.choices[0].message.content)
        # A stream: usage is requested behind the scenes; the chunks you see are unchanged.
        for _chunk in client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Say hello"}], stream=True
        ):
            pass

    for event in costs.events:
        data = event.data
        print(
            f"{event.type} customer={event.customer} key={event.idempotency_key} model={data['model']} "
            f"in={data['input_tokens']} cached={data.get('cache_read_tokens', 0)} out={data['output_tokens']} "
            f"amount={data['amount']} {data['currency']}"
        )
    print("total:", costs.total(), "usage_missing:", pc.stats()["usage_missing"])
    pc.shutdown()


if __name__ == "__main__":
    main()
