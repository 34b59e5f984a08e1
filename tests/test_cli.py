"""The paygentic-costs command: the demo end to end, and each subcommand against a real local server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

import paygentic_costs as pc
from paygentic_costs.cli import main
from paygentic_costs.client import Client
from paygentic_costs.server import LocalServer

CLI = [sys.executable, "-m", "paygentic_costs.cli"]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalServer]:
    with LocalServer(str(tmp_path / "local.db")) as running:
        yield running


def test_demo_runs_end_to_end() -> None:
    out = subprocess.run([*CLI, "demo", "--jobs", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "every cost reached Paygentic exactly once" in out.stdout
    for customer in ("cus_acme", "cus_globex", "cus_initech"):
        assert customer in out.stdout
    assert "openai/chat.completions" in out.stdout and "anthropic/messages" in out.stdout
    assert "Cost per hour" in out.stdout and "Traceback" not in out.stderr


def test_rates_show_prices_each_bucket(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rates = tmp_path / "rates.toml"
    rates.write_text(
        '[llm."openai:gpt-4o-mini"]\ninput_per_mtok = "0.15"\noutput_per_mtok = "0.60"\ncache_read_per_mtok = "0.075"\n'
    )
    assert main(["rates", "show", "openai:gpt-4o-mini-2024-07-18", "--rates", str(rates)]) == 0
    printed = capsys.readouterr().out
    assert "0.15" in printed and "0.6" in printed and "0.075" in printed and "file:openai:gpt-4o-mini" in printed
    assert main(["rates", "show", "acme:nothing-like-this"]) == 1
    assert "unknown_model" in capsys.readouterr().out


def test_doctor_checks_endpoint_and_key_without_printing_it(server: LocalServer) -> None:
    secret = "sk_doctor_SECRET_123"
    out = subprocess.run(
        [*CLI, "doctor", "--base-url", server.url, "--api-key", secret], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "reachable: yes" in out.stdout and "key: accepted" in out.stdout
    assert "openai" in out.stdout and "anthropic" in out.stdout
    assert secret not in out.stdout + out.stderr


def test_doctor_reports_an_unreachable_endpoint() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["doctor", "--base-url", f"http://127.0.0.1:{port}", "--api-key", "k"]) == 1


def test_summary_reads_back_what_was_recorded(
    server: LocalServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Client("sk_sum", base_url=server.url) as client:
        cost = client.create_cost(
            "Enrichment",
            event_type="cost.enrichment",
            aggregation="SUM",
            value_property="$.amount",
            unit_cost=1,
            currency="USD",
            product_id="prod_1",
            group_by={"provider": "$.provider"},
        )
    pc.configure(api_key="sk_sum", base_url=server.url, source="test")
    with pc.job("J", customer="cus_1"):
        for _ in range(3):
            pc.record("cost.enrichment", amount="0.1", provider="clearbit")
    assert pc.flush(10)
    assert main(["summary", "--base-url", server.url, "--api-key", "sk_sum", "--json", "--group-by", "provider"]) == 0
    result = json.loads(capsys.readouterr().out)
    (row,) = result["costs"]
    assert row["id"] == cost.id and Decimal(row["totalCost"]) == Decimal("0.3")
    assert row["groups"] == [{"dimensions": {"provider": "clearbit"}, "cost": "0.3"}]
    assert main(["summary", "--base-url", server.url, "--api-key", "sk_sum"]) == 0
    assert "Enrichment" in capsys.readouterr().out


def test_reprice_sends_held_usage_once_a_rate_exists(
    server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAYGENTIC_API_KEY", "sk_rp")
    monkeypatch.setenv("PAYGENTIC_BASE_URL", server.url)
    with pc.job("held-job", customer="cus_9"):
        assert (
            pc.record("cost.ai.inference", usage=pc.Usage(input_tokens=1_000_000), provider="acme", model="acme-1")
            is None
        )
    pc.shutdown()
    rates = tmp_path / "rates.toml"
    rates.write_text('[llm."acme:acme-1"]\ninput_per_mtok = "2.5"\noutput_per_mtok = "10"\n')
    assert main(["reprice", "--rates", str(rates), "--timeout", "10"]) == 0
    events = httpx.get(f"{server.url}/_local/events", headers={"Authorization": "Bearer sk_rp"}).json()["data"]
    assert [(e["idempotencyKey"], Decimal(str(e["data"]["amount"]))) for e in events] == [
        ("held-job-cost.ai.inference", Decimal("2.5"))
    ]


def test_serve_starts_a_server_that_accepts_events(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [*CLI, "serve", "--port", str(port), "--db", str(tmp_path / "s.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                response = httpx.post(
                    f"http://127.0.0.1:{port}/v0/events",
                    headers={"Authorization": "Bearer t"},
                    json={"type": "cost.x", "source": "s", "subject": "c", "data": {"amount": 1}},
                )
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert response.status_code == 202
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_help_is_taken_from_docstrings(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("serve", "demo", "summary", "doctor", "rates", "reprice"):
        assert command in text
