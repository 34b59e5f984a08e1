"""Added overhead per OpenAI call: paygentic-costs vs the bare SDK vs opentelemetry-instrumentation-openai-v2.

Method (reference/bench-notes.md): one ``openai.OpenAI`` client over ``httpx2.MockTransport`` returning a fixed chat
completion (and, for streams, 58 SSE chunks + the usage chunk when asked for + ``[DONE]``), so the SDK's own cost is
the floor. Each configuration runs in its own subprocess (patches never leak between them); the parent interleaves
rounds across them (shuffled order per round). Per round: ``--calls`` non-streaming and ``--stream-calls`` streaming
calls after a warm-up, each timed with ``perf_counter_ns``.

Pairing: inside each configuration's process, every instrumented call is paired with a bare call made right before
or after it (order drawn at random per pair), by switching the patched SDK attributes to their originals and back
between the two calls (nothing else changes: the instrumentation's threads and state stay up). A round's figure is
the median of its per-pair differences; reported is the median over rounds. Comparing medians of *separate* bare and
instrumented processes (the first version of this script) is swamped on shared machines by process-to-process offsets
of several percent of a ~2 ms call; the ``control`` configuration (bare paired with bare, same switching) shows the
floor. Pairing mostly leaves out what background threads spend now and then (their CPU lands on whichever call holds
the GIL), so each round also reports the CPU time of the process's other threads per pair.

    python bench/bench_openai.py                    # full run (10 rounds x 2,000 / 200 calls)
    python bench/bench_openai.py --rounds 3 --calls 300 --stream-calls 30   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

CONFIGS = ("control", "paygentic", "otel")
REFERENCE_BARE_US = {False: 872, True: 5944}  # bench-notes: the bare call and the bare 58-chunk stream there
STREAM_CONTENT_CHUNKS = 56  # + the role chunk + the finish chunk = 58 chunks, + usage chunk (when asked) + [DONE]
RATES = '[llm."openai:gpt-4o"]\ninput_per_mtok = "2.50"\ncache_read_per_mtok = "1.25"\noutput_per_mtok = "10.00"\n'

CHAT_BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1741569952, "model": "gpt-4o-2024-08-06",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?",
                                         "refusal": None, "annotations": []}, "logprobs": None,
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 1117, "completion_tokens": 9, "total_tokens": 1126,
              "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
              "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}},
    "service_tier": "default", "system_fingerprint": "fp_50cad350e4",
}).encode()


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, Any] | None = None) -> bytes:
    body = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1741570283,
            "model": "gpt-4o-2024-08-06", "service_tier": "default", "system_fingerprint": "fp_50cad350e4",
            "choices": [] if usage else [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            "usage": usage}
    # Compact JSON, as the API writes its chunks (reference/fixtures/openai_chat_stream.sse).
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


STREAM_HEAD = (_chunk({"role": "assistant", "content": ""})
               + b"".join(_chunk({"content": f" tok{i}"}) for i in range(STREAM_CONTENT_CHUNKS))
               + _chunk({}, finish="stop"))
STREAM_USAGE = _chunk({}, usage={"prompt_tokens": 1117, "completion_tokens": 58, "total_tokens": 1175,
                                 "prompt_tokens_details": {"cached_tokens": 1024}})


# -- worker (one configuration, one process) --------------------------------------------------------------------------

def _client() -> Any:
    import httpx2
    import openai

    def handler(request: httpx2.Request) -> httpx2.Response:
        body = json.loads(request.content)
        if not body.get("stream"):
            return httpx2.Response(200, headers={"content-type": "application/json", "x-request-id": "req_b"},
                                   content=CHAT_BODY)
        # Like the API: the usage chunk only when the request asked for it.
        usage = STREAM_USAGE if (body.get("stream_options") or {}).get("include_usage") else b""
        return httpx2.Response(200, headers={"content-type": "text/event-stream"},
                               content=STREAM_HEAD + usage + b"data: [DONE]\n\n")

    return openai.OpenAI(api_key="bench", base_url="http://bench.test/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


# Where either instrumentation patches the sync chat path; switching these attributes turns it off and on.
_PATCH_SITES = (
    ("openai._base_client", "SyncAPIClient"),
    ("openai.resources.chat.completions.completions", "Completions"),
    ("openai._response", "APIResponse"),
    ("openai._legacy_response", "LegacyAPIResponse"),
)


def _snapshot() -> dict[tuple[type, str], Any]:
    import importlib

    values: dict[tuple[type, str], Any] = {}
    for module, name in _PATCH_SITES:
        owner = getattr(importlib.import_module(module), name)
        for attribute, value in vars(owner).items():
            values[(owner, attribute)] = value
    return values


class Switch:
    """Turns an installed instrumentation off (originals back) and on again, by attribute assignment only."""

    def __init__(self, before: dict[tuple[type, str], Any], after: dict[tuple[type, str], Any]) -> None:
        self.changed = [(key, before[key], value) for key, value in after.items()
                        if key in before and before[key] is not value]

    def set(self, on: bool) -> None:
        for (owner, attribute), original, patched in self.changed:
            setattr(owner, attribute, patched if on else original)


def _setup(config: str) -> tuple[Any, Switch]:
    """Install the configuration; returns a context manager to run calls in, and its on/off switch."""
    import contextlib

    import openai  # noqa: F401 -- the patch sites must exist before the snapshot

    before = _snapshot()
    scope: Any = contextlib.nullcontext()
    if config == "paygentic":
        import paygentic_costs as pc
        from paygentic_costs.export import Outcome

        class DiscardingExporter:
            """Acknowledges and drops every event, like the span exporter below: an exporter that kept the ~10,000
            events of a run would grow this process's heap, and every call in it (bare ones too) would slow down."""

            def export(self, events: Any, timeout: float) -> list[Outcome]:
                return [Outcome("ack")] * len(events)

            def shutdown(self) -> None:
                pass

        state = Path(tempfile.mkdtemp(prefix="bench-openai-"))
        (state / "rates.toml").write_text(RATES)
        pc.configure(rates=state / "rates.toml", exporter=DiscardingExporter(), state_dir=state)
        pc.instrument("openai")
        scope = pc.customer("cus_bench")
    elif config == "otel":
        from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class NoopExporter(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(NoopExporter()))
        OpenAIInstrumentor().instrument(tracer_provider=provider)
    switch = Switch(before, _snapshot())
    if config != "control" and not switch.changed:
        raise SystemExit(f"{config}: found nothing patched at {_PATCH_SITES}")
    return scope, switch


def _call(completions: Any, stream: bool, messages: list[dict[str, str]]) -> int:
    # ``completions.create`` is looked up per call: a bound method taken once would keep whichever function the
    # switch had installed at that moment.
    clock = time.perf_counter_ns
    start = clock()
    if stream:
        for _ in completions.create(model="gpt-4o", messages=messages, stream=True):
            pass
    else:
        completions.create(model="gpt-4o", messages=messages)
    return clock() - start


def _round(client: Any, switch: Switch, stream: bool, calls: int) -> tuple[int, int, int, int]:
    """``calls`` pairs; returns (median paired difference, median bare call, median instrumented call, CPU time of the
    process's other threads per pair) in ns.

    The last one is what pairing cannot see: a background thread (our delivery worker, a BatchSpanProcessor) runs
    now and then, its CPU time lands on whichever call holds the GIL at that moment, and the median of differences
    mostly leaves it out.
    """
    messages = [{"role": "user", "content": "Hi"}]
    process_start, thread_start = time.process_time_ns(), time.thread_time_ns()
    create = client.chat.completions
    diffs: list[int] = []
    bare: list[int] = []
    instrumented: list[int] = []
    coin = random.Random(calls)
    for _ in range(calls):
        if coin.random() < 0.5:  # random, not alternating: a fixed order beats in step with the worker's 50 ms window
            switch.set(False)
            off = _call(create, stream, messages)
            switch.set(True)
            on = _call(create, stream, messages)
        else:
            switch.set(True)
            on = _call(create, stream, messages)
            switch.set(False)
            off = _call(create, stream, messages)
        diffs.append(on - off)
        bare.append(off)
        instrumented.append(on)
    switch.set(True)
    background = (time.process_time_ns() - process_start) - (time.thread_time_ns() - thread_start)
    return (int(statistics.median(diffs)), int(statistics.median(bare)), int(statistics.median(instrumented)),
            background // calls)


def worker(config: str) -> None:
    scope, switch = _setup(config)
    client = _client()
    with scope:
        for line in sys.stdin:
            command = json.loads(line)
            _round(client, switch, command["stream"], max(10, command["calls"] // 10))  # warm-up
            diff, bare, instrumented, background = _round(client, switch, command["stream"], command["calls"])
            print(json.dumps({"diff_ns": diff, "bare_ns": bare, "on_ns": instrumented, "background_ns": background}),
                  flush=True)
    if config == "paygentic":
        import paygentic_costs as pc

        stats = pc.stats()
        print(json.dumps({"stats": {k: stats[k] for k in ("recorded", "usage_missing", "unpriced")}}), flush=True)


# -- parent -----------------------------------------------------------------------------------------------------------

def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--stream-calls", type=int, default=200)
    parser.add_argument("--worker", choices=CONFIGS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker)
        return

    procs = {c: subprocess.Popen([sys.executable, __file__, "--worker", c], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True) for c in CONFIGS}
    results: dict[tuple[str, bool], list[dict[str, int]]] = {(c, s): [] for c in CONFIGS for s in (False, True)}
    for index in range(args.rounds):
        for stream, calls in ((False, args.calls), (True, args.stream_calls)):
            order = list(CONFIGS)
            random.shuffle(order)
            for config in order:
                proc = procs[config]
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(json.dumps({"stream": stream, "calls": calls}) + "\n")
                proc.stdin.flush()
                results[(config, stream)].append(json.loads(proc.stdout.readline()))
        print(f"round {index + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    worker_stats = {}
    for config, proc in procs.items():
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        tail = proc.stdout.read().strip()
        if tail:
            worker_stats[config] = json.loads(tail.splitlines()[-1])["stats"]
        proc.wait(timeout=60)

    def median_of(config: str, stream: bool, field: str) -> float:
        return statistics.median(r[field] for r in results[(config, stream)]) / 1000

    print(f"machine: nproc={os.cpu_count()}, {_cpu_model()}, Python {platform.python_version()}")
    print("versions: " + ", ".join(f"{p} {version(p)}" for p in (
        "openai", "httpx2", "wrapt", "paygentic-costs", "paygentic-costs-openai", "opentelemetry-sdk",
        "opentelemetry-instrumentation-openai-v2", "opentelemetry-util-genai")))
    print(f"method: {args.rounds} interleaved rounds x {args.calls} non-streaming / {args.stream_calls} streaming "
          f"paired calls; medians over rounds of each round's median paired difference; background CPU: the "
          f"process's other threads, per pair (one instrumented call); "
          f"paygentic worker stats: {worker_stats.get('paygentic')}")
    print()
    print("| configuration | non-stream: bare call | added | ratio | background CPU | "
          "stream (58 chunks): bare call | added | ratio | background CPU |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"control": "control (bare paired with bare: the noise floor)", "paygentic": "paygentic-costs-openai",
             "otel": "opentelemetry-instrumentation-openai-v2 + BatchSpanProcessor"}
    for config in ("control", "paygentic", "otel"):
        cells = []
        for stream in (False, True):
            bare, plus = median_of(config, stream, "bare_ns"), median_of(config, stream, "diff_ns")
            background = median_of(config, stream, "background_ns")
            cells.append(f"{bare:,.0f} µs | {plus:+,.1f} µs | {(bare + plus) / bare:.3f} | {background:,.1f} µs")
        print(f"| {names[config]} | {cells[0]} | {cells[1]} |")
    for stream, label in ((False, "non-stream"), (True, "stream")):
        ours, otel = median_of("paygentic", stream, "diff_ns"), median_of("otel", stream, "diff_ns")
        if otel > 0:
            print(f"\n{label}: paygentic-costs adds {ours / otel:.2f}x what openai-v2 adds", end="")
    print()
    # The targets are µs on bench-notes' machines. Scaled round by round (each round's added time over the bare call
    # measured with it), so the machine's drift between rounds cancels, as in a paired ratio.
    for stream, label in ((False, "non-stream"), (True, "stream")):
        reference = REFERENCE_BARE_US[stream]
        rounds = {config: [r["diff_ns"] / r["bare_ns"] * reference for r in results[(config, stream)]]
                  for config in CONFIGS}
        print(f"{label} at bench-notes' speed ({reference:,} µs bare, each round scaled by its own bare call): "
              + ", ".join(f"{config} {statistics.median(values):+.1f} µs" for config, values in rounds.items())
              + f"; paygentic per round {[round(value) for value in rounds['paygentic']]}")
    per_round = {key: [round(r["diff_ns"] / 1000) for r in rows] for key, rows in results.items()}
    print("\nper-round added µs: " + "; ".join(
        f"{config} {'stream' if stream else 'non-stream'} {values}" for (config, stream), values in per_round.items()))

if __name__ == "__main__":
    main()
