"""Fixtures: the real ``anthropic`` SDK against a fake Messages API (in-process transport or a local HTTP server).

The fake serves the bodies under ``fixtures/``: copies of the shared reference fixtures (``messages.json``,
``messages_stream.sse``, ``messages_web_search.json``) plus three made for these tests from the same story
(``messages_cache_mix.json``: cache reads and both write TTLs; ``messages_parse.json``: JSON text for ``parse()``;
``messages_stream_server_tools.sse``: two running-total ``message_delta`` events).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest

import paygentic_costs as pc
from paygentic_costs import _guard  # the only way to see swallowed internal errors (no public hook yet)
from paygentic_costs.export import InMemoryExporter

FIXTURES = Path(__file__).parent / "fixtures"
REPORTED_MODEL = "claude-sonnet-4-5-20250929"
REQUEST: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Hello"}],
}

# Prices chosen for this suite, so amounts never move with the bundled catalog.
RATES = """
currency = "USD"

[llm."anthropic:claude-sonnet-4-5"]
input_per_mtok = "3"
output_per_mtok = "15"
cache_read_per_mtok = "0.30"
cache_write_per_mtok = "3.75"
cache_write_1h_per_mtok = "6"
web_search_per_request = "0.01"
"""


def fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


@dataclass
class FakeAnthropic:
    """The fake Messages API: what to answer next, and what it was asked."""

    body: str = field(default_factory=lambda: fixture_text("messages.json"))
    sse: str = field(default_factory=lambda: fixture_text("messages_stream.sse"))
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    def respond(self, method: str, path: str, raw_body: bytes) -> tuple[int, dict[str, str], bytes]:
        if method != "POST" or not path.startswith("/v1/messages"):
            return 404, {"content-type": "application/json"}, b'{"type":"error","error":{"type":"not_found_error"}}'
        request = json.loads(raw_body or b"{}")
        self.requests.append(request)
        headers = {"request-id": "req_test_1"}
        if self.status != 200:
            error = {"type": "error", "error": {"type": "invalid_request_error", "message": "bad request"}}
            return self.status, {**headers, "content-type": "application/json"}, json.dumps(error).encode()
        if request.get("stream"):
            return 200, {**headers, "content-type": "text/event-stream"}, self.sse.encode()
        return 200, {**headers, "content-type": "application/json"}, self.body.encode()


@pytest.fixture
def fake() -> FakeAnthropic:
    return FakeAnthropic()


class _Server:
    """A stdlib HTTP server on 127.0.0.1 answering from whichever ``FakeAnthropic`` is current."""

    def __init__(self) -> None:
        self.fake = FakeAnthropic()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                status, headers, payload = server.fake.respond("POST", self.path, self.rfile.read(length))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[_Server]:
    server = _Server()
    yield server
    server.close()


@pytest.fixture(params=["mock_transport", "local_server"])
def transport(request: pytest.FixtureRequest, fake: FakeAnthropic) -> str:
    """Run a test over both the in-process MockTransport and real HTTP to a local server."""
    if request.param == "local_server":
        request.getfixturevalue("fake_server").fake = fake
    return str(request.param)


def _client_kwargs(
    transport: str, fake: FakeAnthropic, request: pytest.FixtureRequest, *, is_async: bool
) -> dict[str, Any]:
    if transport == "local_server":
        return {"base_url": request.getfixturevalue("fake_server").url}

    def handler(req: Any) -> Any:
        status, headers, payload = fake.respond(req.method, req.url.path, req.read())
        return httpx2.Response(status, headers=headers, content=payload)

    # anthropic rejects a legacy httpx client: the transport must be httpx2's.
    client_type = httpx2.AsyncClient if is_async else httpx2.Client
    http_client = client_type(transport=httpx2.MockTransport(handler))
    return {"base_url": "http://fake-anthropic.test", "http_client": http_client}


@pytest.fixture
def make_client(
    transport: str, fake: FakeAnthropic, request: pytest.FixtureRequest
) -> Iterator[Callable[[], anthropic.Anthropic]]:
    """Builds sync clients talking to the fake (each test may need several: before and after instrument())."""
    made: list[anthropic.Anthropic] = []

    def make() -> anthropic.Anthropic:
        kwargs = _client_kwargs(transport, fake, request, is_async=False)
        made.append(anthropic.Anthropic(api_key="test", max_retries=0, **kwargs))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def client(make_client: Callable[[], anthropic.Anthropic]) -> anthropic.Anthropic:
    return make_client()


@pytest.fixture
async def async_client(
    transport: str, fake: FakeAnthropic, request: pytest.FixtureRequest
) -> Any:
    kwargs = _client_kwargs(transport, fake, request, is_async=True)
    c = anthropic.AsyncAnthropic(api_key="test", max_retries=0, **kwargs)
    yield c
    await c.close()


@pytest.fixture
def rates(tmp_path: Path) -> Path:
    path = tmp_path / "rates.toml"
    path.write_text(RATES)
    return path


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[BaseException]]:
    """A fresh runtime per test, no real credentials, and swallowed internal errors fail the test."""
    for name in ("PAYGENTIC_API_KEY", "PAYGENTIC_BEARER_AUTH", "PAYGENTIC_BASE_URL", "PAYGENTIC_COSTS_RATES",
                 "PAYGENTIC_COSTS_STRICT", "PAYGENTIC_COSTS_SPOOL_DIR", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PAYGENTIC_COSTS_STATE_DIR", str(tmp_path / "state"))
    errors: list[BaseException] = []
    _guard.set_error_sink(errors.append)
    yield errors
    _guard.set_error_sink(None)
    pc.uninstrument()
    pc.shutdown(timeout=0)
    assert not errors, f"internal errors were swallowed during the test: {errors!r}"


@pytest.fixture
def configured(rates: Path, tmp_path: Path) -> InMemoryExporter:
    exporter = InMemoryExporter()
    pc.configure(rates=rates, exporter=exporter, state_dir=tmp_path / "state", source="https://app.test")
    return exporter


@pytest.fixture
def instrumented(configured: InMemoryExporter) -> Iterator[None]:
    assert pc.instrument("anthropic") == ["anthropic"]
    yield
    pc.uninstrument("anthropic")


@pytest.fixture
def req() -> dict[str, Any]:
    """Keyword arguments of a minimal Messages request (a fresh copy per test)."""
    return {**REQUEST, "messages": list(REQUEST["messages"])}
