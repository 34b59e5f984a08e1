"""Interpreted work per OpenAI call: Python bytecode instructions executed, instrumented vs bare, per function.

A companion to ``bench_openai.py``: wall-clock differences of tens of microseconds on a shared machine drift from run
to run, while the number of bytecode instructions one call executes does not. Same client, same bodies as
``bench_openai.py`` (MockTransport; a chat completion, and a 58-chunk stream), the patched ``request`` switched in
and out in one process. Counted with ``sys.settrace`` opcode events, so it measures *what runs*, not how long it
takes; C code (json, regex scans, memcpy) counts as the one instruction that calls it.

    python bench/count_openai.py            # both kinds of call, the 12 functions that add the most
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_openai  # the shared client and bodies

Where = tuple[str, str]


def _count(call: Callable[[], None]) -> collections.Counter[Where]:
    counts: collections.Counter[Where] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[(code.co_filename.rsplit("site-packages/", 1)[-1].rsplit("/src/", 1)[-1], code.co_name)] += 1
        return trace

    sys.settrace(trace)
    try:
        call()
    finally:
        sys.settrace(None)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--top", type=int, default=12, help="functions listed per kind of call")
    args = parser.parse_args()

    import openai._base_client as base_client

    import paygentic_costs as pc
    from paygentic_costs.export import InMemoryExporter

    state = Path(tempfile.mkdtemp())
    (state / "rates.toml").write_text(bench_openai.RATES)
    pc.configure(rates=state / "rates.toml", exporter=InMemoryExporter(), state_dir=state)
    client = bench_openai._client()
    messages = [{"role": "user", "content": "Hi"}]
    original = base_client.SyncAPIClient.__dict__["request"]
    pc.instrument("openai")
    patched = base_client.SyncAPIClient.__dict__["request"]
    create = client.chat.completions.create

    def chat() -> None:
        create(model="gpt-4o", messages=messages)

    def stream() -> None:
        for _ in create(model="gpt-4o", messages=messages, stream=True):
            pass

    print(f"Python {sys.version.split()[0]}; bytecode instructions executed per call (after warm-up)\n")
    with pc.customer("bench"):
        for name, call in (("non-streaming chat call", chat), ("58-chunk chat stream", stream)):
            counts = {}
            for label, request in (("bare", original), ("instrumented", patched)):
                base_client.SyncAPIClient.request = request  # type: ignore[method-assign]
                for _ in range(5):
                    call()
                counts[label] = _count(call)
            base_client.SyncAPIClient.request = patched  # type: ignore[method-assign]
            bare, instrumented = sum(counts["bare"].values()), sum(counts["instrumented"].values())
            added = collections.Counter(counts["instrumented"])
            added.subtract(counts["bare"])
            print(f"{name}: bare {bare:,}, instrumented {instrumented:,}, added {instrumented - bare:+,} "
                  f"({(instrumented - bare) / bare:+.2%})")
            for (file, function), n in sorted(added.items(), key=lambda item: -abs(item[1]))[: args.top]:
                if n:
                    print(f"  {n:+6,}  {function}  ({file})")
            print()
    pc.flush()
    print("recorded:", pc.stats()["recorded"])


if __name__ == "__main__":
    main()
