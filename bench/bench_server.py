"""Ingest throughput of the local server (events/s), with a bare-httpx client as the baseline.

The server runs in its own process (``paygentic_costs.server.serve``, SQLite file in a temp dir) so client and
server do not share a GIL. ``bench_sender`` takes any callable that ships one event body; plug the project's
exporter in there to compare it with the bare client measured here.

    python bench/bench_server.py [--events 2000] [--rounds 3] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib.metadata import version

import httpx

Sender = Callable[[bytes], object]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def server_process() -> Iterator[str]:
    """Run the local server in a subprocess on a free port; yield its URL."""
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        code = f"from paygentic_costs.server import serve; serve(port={port}, db_path={os.path.join(tmp, 'b.db')!r})"
        proc = subprocess.Popen([sys.executable, "-c", code])
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    httpx.get(url + "/openapi.json", timeout=1)
                    break
                except httpx.TransportError:
                    time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            proc.wait(10)


def event_bodies(count: int, run: str) -> list[bytes]:
    """``count`` distinct cost events, as an exporter would send them."""
    return [
        (
            f'{{"type":"cost.ai.inference","source":"bench","subject":"cus_{i % 50}",'
            f'"timestamp":"2025-03-01T12:00:00Z",'
            f'"idempotencyKey":"{run}-{i}","data":{{"amount":0.0042,"currency":"USD","provider":"openai",'
            f'"model":"gpt-4o-mini","input_tokens":1200,"output_tokens":300}}}}'
        ).encode()
        for i in range(count)
    ]


def bench_sender(send: Sender, bodies: list[bytes], concurrency: int = 1) -> float:
    """Ship every body through ``send`` (from ``concurrency`` threads) and return events per second."""
    start = time.perf_counter()
    if concurrency == 1:
        for body in bodies:
            send(body)
    else:
        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(send, bodies))
    return len(bodies) / (time.perf_counter() - start)


def bare_httpx_sender(client: httpx.Client) -> Sender:
    """The baseline: one ``POST /v0/events`` per event over a pooled keep-alive ``httpx.Client``."""

    def send(body: bytes) -> object:
        response = client.post("/v0/events", content=body, headers={"content-type": "application/json"})
        if response.status_code != 202:
            raise RuntimeError(f"ingest failed: {response.status_code} {response.text}")
        return response

    return send


def exporter_round(url: str, token: str, count: int, run: str) -> float:
    """The project's own pipeline as the client: ``count`` records in a job, then ``flush``; events per second."""
    import paygentic_costs as pc

    pc.configure(api_key=token, base_url=url, source="bench", max_in_flight=8)
    start = time.perf_counter()
    with pc.job(f"bench-{run}", customer="cus_bench"):
        for _ in range(count):
            pc.record("cost.ai.inference", amount="0.0042", provider="openai", model="gpt-4o-mini")
    if not pc.flush(timeout=300):
        raise RuntimeError(f"exporter did not deliver: {pc.stats()}")
    elapsed = time.perf_counter() - start
    pc.shutdown()
    return count / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    with open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "?")
    print(f"machine: nproc={os.cpu_count()} cpu={cpu!r} python={platform.python_version()}")
    print(
        f"versions: fastapi={version('fastapi')} uvicorn={version('uvicorn')} httpx={version('httpx')} "
        f"sqlite={__import__('sqlite3').sqlite_version}"
    )
    results: dict[str, list[float]] = {"sequential": [], f"{args.concurrency} threads": [], "project exporter": []}
    with server_process() as url:
        token = f"sk_bench_{uuid.uuid4().hex}"
        limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, limits=limits) as client:
            send = bare_httpx_sender(client)
            send(event_bodies(1, "warmup")[0])
            for round_no in range(args.rounds):
                for label, threads in (("sequential", 1), (f"{args.concurrency} threads", args.concurrency)):
                    bodies = event_bodies(args.events, f"r{round_no}-{threads}")
                    results[label].append(bench_sender(send, bodies, threads))
                results["project exporter"].append(exporter_round(url, token, args.events, f"r{round_no}"))
            stored = client.get("/_local/events", params={"limit": 1}).json()["pagination"]["total"]
    expected = 1 + args.events * args.rounds * 3
    print(f"stored {stored} of {expected} events sent")
    for label, rates in results.items():
        print(
            f"{label if label == 'project exporter' else 'bare httpx, ' + label}: "
            f"median {statistics.median(rates):,.0f} events/s "
            f"(rounds: {', '.join(f'{r:,.0f}' for r in rates)})"
        )


if __name__ == "__main__":
    main()
