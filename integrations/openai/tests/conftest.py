"""Fixtures: the real OpenAI SDK against a fake OpenAI (MockTransport, or a local HTTP server), a pinned rate file,
a configured runtime with captured events, and a clean slate (uninstrumented, fresh runtime) after every test."""

from __future__ import annotations

import importlib
import json
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

openai = pytest.importorskip("openai")

import paygentic_costs as pc  # noqa: E402
from paygentic_costs import _guard  # noqa: E402
from paygentic_costs.export import InMemoryExporter  # noqa: E402
from paygentic_costs.testing import Capture, capture  # noqa: E402

# Version branch: openai 3.x speaks httpx2, older releases httpx. DefaultHttpxClient subclasses whichever this SDK uses,
# so the mock transport and the test's own clients always match the SDK under test (tests/run_oldest.sh).
httpx_mod = importlib.import_module(openai.DefaultHttpxClient.__mro__[1].__module__.split(".")[0])

HERE = Path(__file__).parent
FIXTURES = HERE / "fixtures"
RATES = HERE / "rates.toml"
REQUEST_ID = "req_0123456789abcdef"


def _fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


class FakeOpenAI:
    """Serves the recorded fixtures the way the API does; remembers every request body.

    ``chat`` streams include the trailing usage chunk only when the request asked for it
    (``stream_options.include_usage``), like the real API. ``overrides`` patch top-level fields of JSON bodies and of
    every chat chunk / the Responses terminal event (e.g. ``{"service_tier": "flex"}``). A request whose model is
    ``"bad-model"`` gets a 400 error body; ``fail_first`` makes the next request answer 500 (retry tests).
    """

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.overrides: dict[str, Any] = {}
        self.fail_first = 0
        self.chat_chunks = 0  # > 0: replace the fixture's content chunks with this many (benchmarks, long streams)
        # MockTransport only: an event stream arrives one event per read, as over a network, instead of in one read.
        # A caller that stops early then has not received the later events (the usage one among them).
        self.event_reads = False

    def respond(self, method: str, path: str, raw_body: bytes) -> tuple[int, dict[str, str], bytes]:
        body = json.loads(raw_body) if raw_body else {}
        self.requests.append({"method": method, "path": path, "body": body})
        headers = {"x-request-id": REQUEST_ID}
        if self.fail_first:
            self.fail_first -= 1
            # retry-after-ms keeps the SDK's back-off at a millisecond
            return 500, {**headers, "content-type": "application/json", "retry-after-ms": "1"}, b'{"error": {}}'
        if body.get("model") == "bad-model":
            error = {"error": {"message": "The model `bad-model` does not exist", "type": "invalid_request_error",
                               "param": "model", "code": "model_not_found"}}
            return 400, {**headers, "content-type": "application/json"}, json.dumps(error).encode()
        route = path.removeprefix("/v1")
        if route == "/chat/completions":
            if body.get("stream"):
                return 200, {**headers, "content-type": "text/event-stream"}, self._chat_stream(body)
            return 200, {**headers, "content-type": "application/json"}, self._json("openai_chat.json")
        if route == "/responses":
            if body.get("stream"):
                return 200, {**headers, "content-type": "text/event-stream"}, self._responses_stream()
            return 200, {**headers, "content-type": "application/json"}, self._json("openai_responses.json")
        if route == "/embeddings":
            return 200, {**headers, "content-type": "application/json"}, self._json("openai_embeddings.json")
        if route == "/models":
            return 200, {**headers, "content-type": "application/json"}, b'{"object": "list", "data": []}'
        return 404, {**headers, "content-type": "application/json"}, b'{"error": {"message": "no route"}}'

    def _json(self, name: str) -> bytes:
        data = json.loads(_fixture(name))
        data.update(self.overrides)
        return json.dumps(data).encode()

    def _chat_stream(self, body: dict[str, Any]) -> bytes:
        wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = []
        for line in _fixture("openai_chat_stream.sse").decode().splitlines():
            if line.startswith("data: {"):
                chunk = json.loads(line[6:])
                chunk.update(self.overrides)
                chunks.append(chunk)
        if self.chat_chunks:
            first, content, finish, usage = chunks[0], chunks[1], chunks[-2], chunks[-1]
            chunks = [first, *([content] * self.chat_chunks), finish, usage]
        if not wants_usage:
            chunks = [c for c in chunks if c["choices"]]
        out = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        return out.encode()

    def _responses_stream(self) -> bytes:
        if not self.overrides:
            return _fixture("openai_responses_stream.sse")
        lines = []
        for line in _fixture("openai_responses_stream.sse").decode().splitlines():
            if line.startswith("data: {") and '"response.completed"' in line:
                event = json.loads(line[6:])
                event["response"].update(self.overrides)
                line = "data: " + json.dumps(event)
            lines.append(line)
        return ("\n".join(lines) + "\n").encode()

    # -- transports -------------------------------------------------------------------------------------------------

    def handler(self, request: Any) -> Any:
        """A MockTransport handler (sync, also accepted by the async transport)."""
        status, headers, content = self.respond(request.method, request.url.path, request.read())
        if self.event_reads and headers.get("content-type") == "text/event-stream":
            return httpx_mod.Response(status, headers=headers, stream=_EventReads(content))
        return httpx_mod.Response(status, headers=headers, content=content)


class _EventReads(httpx_mod.SyncByteStream, httpx_mod.AsyncByteStream):  # type: ignore[misc]
    """An SSE body handed over one event per read, to sync and async clients alike."""

    def __init__(self, body: bytes) -> None:
        self.reads = [event + b"\n\n" for event in body.split(b"\n\n") if event]

    def __iter__(self) -> Iterator[bytes]:
        yield from self.reads

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for read in self.reads:
            yield read


@pytest.fixture
def http_lib() -> Any:
    """The HTTP library this openai version uses (``httpx2`` on 3.x, ``httpx`` before)."""
    return httpx_mod


@pytest.fixture
def fake() -> FakeOpenAI:
    """A fresh fake OpenAI per test."""
    return FakeOpenAI()


class _Server:
    """A local HTTP server in a thread that forwards to the current test's FakeOpenAI."""

    def __init__(self) -> None:
        self.target: FakeOpenAI = FakeOpenAI()
        server_self = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                self._answer()

            def do_GET(self) -> None:
                self._answer()

            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, headers, content = server_self.target.respond(self.command, self.path.split("?")[0], raw)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="fake-openai", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[_Server]:
    """A local fake OpenAI server on 127.0.0.1 (session-wide; each test points it at its own ``fake``)."""
    server = _Server()
    yield server
    server.close()


@pytest.fixture(params=["mock", "http"])
def transport(request: pytest.FixtureRequest) -> str:
    """Run a test over MockTransport and over real sockets to the local fake server."""
    return str(request.param)


@pytest.fixture
def client(fake: FakeOpenAI, fake_server: _Server, transport: str) -> Iterator[Any]:
    """A real ``openai.OpenAI`` talking to the fake."""
    if transport == "mock":
        http_client = httpx_mod.Client(transport=httpx_mod.MockTransport(fake.handler))
        sdk = openai.OpenAI(api_key="test", base_url="http://fake.test/v1", max_retries=0, http_client=http_client)
    else:
        fake_server.target = fake
        sdk = openai.OpenAI(api_key="test", base_url=fake_server.url + "/v1", max_retries=0)
    yield sdk
    sdk.close()


@pytest.fixture
async def async_client(fake: FakeOpenAI, fake_server: _Server, transport: str) -> Any:
    """A real ``openai.AsyncOpenAI`` talking to the fake."""
    if transport == "mock":
        http_client = httpx_mod.AsyncClient(transport=httpx_mod.MockTransport(fake.handler))
        sdk = openai.AsyncOpenAI(api_key="test", base_url="http://fake.test/v1", max_retries=0, http_client=http_client)
    else:
        fake_server.target = fake
        sdk = openai.AsyncOpenAI(api_key="test", base_url=fake_server.url + "/v1", max_retries=0)
    yield sdk
    await sdk.close()


@pytest.fixture(autouse=True)
def _clean_runtime(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts unconfigured and uninstrumented, and leaves nothing patched behind."""
    monkeypatch.setenv("PAYGENTIC_COSTS_STATE_DIR", str(tmp_path / "state"))
    for name in ("PAYGENTIC_API_KEY", "PAYGENTIC_BEARER_AUTH", "PAYGENTIC_BASE_URL", "PAYGENTIC_COSTS_RATES"):
        monkeypatch.delenv(name, raising=False)
    yield
    pc.uninstrument()
    pc.shutdown(timeout=0)


@pytest.fixture(autouse=True)
def _fail_on_internal_error(request: pytest.FixtureRequest) -> Iterator[list[BaseException]]:
    """Swallowed internal errors are test failures (the core's test sink), unless a test opts out."""
    errors: list[BaseException] = []
    _guard.set_error_sink(errors.append)
    yield errors
    _guard.set_error_sink(None)
    if errors and request.node.get_closest_marker("allow_internal_errors") is None:
        raise AssertionError(f"internal errors were swallowed during the test: {errors!r}")


@pytest.fixture
def costs(tmp_path: Path) -> Iterator[Capture]:
    """Configured with the pinned rate file, OpenAI instrumented, events captured (synchronously)."""
    pc.configure(rates=RATES, exporter=InMemoryExporter(), state_dir=tmp_path)
    pc.instrument("openai")
    with capture() as captured:
        yield captured


def _chat_helpers(sdk: Any) -> Any:
    # Version branch: the chat ``parse``/``stream`` helpers lived under ``client.beta.chat.completions`` before 1.92.
    completions = sdk.chat.completions
    if hasattr(completions, "parse"):
        return completions
    return sdk.beta.chat.completions


@pytest.fixture
def chat_helpers() -> Any:
    """``chat_helpers(client)`` -> the object with the chat ``parse``/``stream`` helpers on this SDK version."""
    return _chat_helpers
