"""A loopback fake of Paygentic's ``POST /v0/events`` for delivery tests, scriptable per request.

It is a stdlib ``ThreadingHTTPServer`` (HTTP/1.1 keep-alive) in a background thread. Every request is logged in
:attr:`FakePaygentic.arrivals` with its arrival time and client port; accepted events are kept by
``idempotencyKey`` in :attr:`FakePaygentic.ledger`, so a resent event is stored once.

A *script* decides what happens to each request. It is called twice: first with ``info.body is None`` (return an
action to act before the body is read, e.g. :data:`RESET_BEFORE_BODY`, or None), then with the body and key.
Returning None means "behave like Paygentic" (202, or 401 without the right Bearer token).

Test modules import it by name (``tests/`` is on pytest's ``pythonpath``)::

    import fake_paygentic as fp

Run ``python tests/fake_paygentic.py`` to serve a healthy fake on a free port in its own process (it prints the
URL and stops when stdin closes); the exporter benchmark uses that.
"""

from __future__ import annotations

import contextlib
import json
import random
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from decimal import Decimal
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from paygentic_costs import CostEvent

# Pipeline timings scaled down for tests (production defaults are 0.5 s / 30 s / 0.1 s / 60 s).
FAST: dict[str, Any] = {
    "backoff_base": 0.01,
    "backoff_cap": 0.1,
    "backoff_floor": 0.005,
    "auth_probe_interval": 0.2,
    "shutdown_timeout": 2.0,
}


def make_event(key: str, amount: str | Decimal = "0.0010", *, timestamp: datetime | None = None,
               customer: str = "cus_test", **data: Any) -> CostEvent:
    """A cost event as the recorder would build it."""
    return CostEvent(
        type="cost.ai.inference",
        source="tests",
        idempotency_key=key,
        timestamp=timestamp or datetime.now(timezone.utc),
        data={"amount": Decimal(amount), "currency": "USD", **data},
        subject=customer,
    )


def assert_identity(stats: Mapping[str, Any]) -> None:
    """recorded == acknowledged + queued + spooled + set_aside + sum(dropped)."""
    total = (stats["acknowledged"] + stats["queued"] + stats["spooled"] + stats["set_aside"]
             + sum(stats["dropped"].values()))
    assert stats["recorded"] == total, f"stats identity broken: {dict(stats)}"

__all__ = [
    "BLACK_HOLE",
    "FAST",
    "PROCESS_THEN_RESET",
    "RESET_AFTER_BODY",
    "RESET_BEFORE_BODY",
    "Action",
    "Arrival",
    "FakePaygentic",
    "FakePaygenticProcess",
    "RequestInfo",
    "assert_identity",
    "fault_mix",
    "make_event",
    "process_then",
    "respond",
]


@dataclass(frozen=True)
class Action:
    """What the fake does with one request.

    ``kind``:
      - ``respond``: answer ``status`` (2xx answers store the event) with optional ``Retry-After`` and JSON
        ``message``;
      - ``reset_before_body`` / ``reset_after_body``: abort the connection with a TCP RST, event not stored;
      - ``process_then_reset``: store the event, then reset instead of answering;
      - ``process_then_status``: store the event, then answer ``status`` (e.g. 500);
      - ``black_hole``: never answer (until the server stops).
    ``delay`` seconds pass before the action.
    """

    kind: str = "respond"
    status: int = 202
    retry_after: str | None = None
    message: str | None = None
    delay: float = 0.0


RESET_BEFORE_BODY = Action("reset_before_body")
RESET_AFTER_BODY = Action("reset_after_body")
PROCESS_THEN_RESET = Action("process_then_reset")
BLACK_HOLE = Action("black_hole")


def respond(status: int, *, retry_after: str | float | None = None, message: str | None = None,
            delay: float = 0.0) -> Action:
    """Answer ``status`` (a 2xx stores the event)."""
    return Action("respond", status, None if retry_after is None else str(retry_after), message, delay)


def process_then(status: int, *, retry_after: str | float | None = None) -> Action:
    """Store the event, then answer ``status`` anyway."""
    return Action("process_then_status", status, None if retry_after is None else str(retry_after))


@dataclass(frozen=True)
class RequestInfo:
    """What a script sees about a request."""

    seq: int  # 1-based, over the server's life
    conn_id: int
    conn_index: int  # 0 for the first request on its connection
    idle_for: float  # seconds the connection sat idle before this request (0 for the first)
    headers: Mapping[str, str]
    body: bytes | None = None
    key: str | None = None
    attempt: int = 0  # 1 for the first request carrying this key, 2 for the next...


@dataclass
class Arrival:
    """One request as the server saw it."""

    seq: int
    at: float  # time.monotonic() when its headers arrived
    port: int  # the client's local port
    conn_id: int
    conn_index: int
    authorization: str | None
    headers: dict[str, str]
    path: str = ""
    key: str | None = None
    body: bytes | None = None
    action: str = ""
    status: int | None = None
    answered_at: float | None = None
    processed: bool = False


Script = Callable[[RequestInfo], "Action | None"]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops SYNs when a client opens its pool at once (1 s retransmit)
    fake: FakePaygentic


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        fake = self.server.fake
        self.timeout = fake.idle_timeout  # StreamRequestHandler applies it: idle keep-alive connections close
        super().setup()
        self.conn_id = fake._open(self.connection)
        self.conn_index = 0
        self.last_done = time.monotonic()

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.server.fake._close(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence per-request logging."""

    def do_GET(self) -> None:
        """``GET /_ledger``: the stored events and the request log, for a fake running in another process."""
        fake = self.server.fake
        with fake._lock:
            payload = {
                "ledger": {key: body.decode() for key, body in fake.ledger.items()},
                "duplicates": fake.duplicates,
                "arrivals": [[a.key, a.body.decode() if a.body else None] for a in fake.arrivals],
            }
        data = json.dumps(payload).encode()
        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                         % (len(data), data))

    def do_POST(self) -> None:
        fake = self.server.fake
        arrived = time.monotonic()
        index = self.conn_index
        self.conn_index += 1
        headers = {name.lower(): value for name, value in self.headers.items()}
        info = RequestInfo(
            seq=0, conn_id=self.conn_id, conn_index=index,
            idle_for=arrived - self.last_done if index else 0.0, headers=headers,
        )
        arrival = fake._arrive(arrived, self.client_address[1], self.conn_id, index, headers, self.path)
        info = replace(info, seq=arrival.seq)
        try:
            action = fake._decide(info)
            if action is not None and action.kind == "reset_before_body":
                arrival.action = action.kind
                self._reset()
                return
            length = int(headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            key = _key_of(body)
            attempt = fake._count_key(arrival, key, body)
            if action is None:
                action = fake._decide(replace(info, body=body, key=key, attempt=attempt))
            self._act(fake, arrival, action, headers, body, key)
        finally:
            fake._leave()
            self.last_done = time.monotonic()

    def _act(self, fake: FakePaygentic, arrival: Arrival, action: Action | None, headers: Mapping[str, str],
             body: bytes, key: str | None) -> None:
        if action is None:
            action = Action()
        arrival.action = action.kind
        if action.delay and fake._stopped.wait(action.delay):
            self._reset()
            return
        if action.kind == "black_hole":
            fake._stopped.wait()
            self._reset()
            return
        if action.kind == "reset_after_body":
            self._reset()
            return
        token = fake.token
        if token is not None and headers.get("authorization") != f"Bearer {token}":
            self._answer(arrival, 401, {"message": "invalid API key", "error": "unauthorized"})
            return
        parsed = _parse(body)
        if parsed is None:
            self._answer(arrival, 400, {"message": "body is not a JSON event with an idempotencyKey"})
            return
        if action.kind == "process_then_reset":
            fake._process(arrival, key, body)
            self._reset()
            return
        if action.kind == "process_then_status":
            fake._process(arrival, key, body)
            self._answer(arrival, action.status, {"message": f"HTTP {action.status}"}, action.retry_after)
            return
        status = action.status
        if 200 <= status < 300:
            fake._process(arrival, key, body)
            self._answer(arrival, status, {"object": "event", "idempotencyKey": key})
        else:
            self._answer(arrival, status, {"message": action.message or f"HTTP {status}"}, action.retry_after)

    def _answer(self, arrival: Arrival, status: int, payload: dict[str, Any], retry_after: str | None = None) -> None:
        data = json.dumps(payload).encode()
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Status"
        head = f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        if retry_after is not None:
            head += f"Retry-After: {retry_after}\r\n"
        if self.close_connection:
            head += "Connection: close\r\n"
        arrival.status = status
        arrival.answered_at = time.monotonic()
        try:
            self.wfile.write(head.encode("latin-1") + b"\r\n" + data)
        except OSError:
            self.close_connection = True

    def _reset(self) -> None:
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()  # linger 0: the close sends RST, the client sees a reset connection
        except OSError:
            pass


def _key_of(body: bytes) -> str | None:
    parsed = _parse(body)
    return None if parsed is None else parsed.get("idempotencyKey")


def _parse(body: bytes) -> dict[str, Any] | None:
    try:
        parsed = json.loads(body)
    except ValueError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("idempotencyKey"), str):
        return None
    return parsed


@dataclass(repr=False)
class FakePaygentic:
    """The fake server. Use as a context manager, or call :meth:`start` and :meth:`stop`.

    Args:
        token: when set, requests without ``Authorization: Bearer <token>`` get 401 (changeable at runtime).
        idle_timeout: close keep-alive connections idle this many seconds.
        script: decides per request (see the module docstring); changeable at runtime.
    """

    token: str | None = None
    idle_timeout: float | None = None
    script: Script | None = None
    arrivals: list[Arrival] = field(default_factory=list)
    ledger: dict[str, bytes] = field(default_factory=dict)  # idempotencyKey -> first stored body
    duplicates: int = 0  # stored requests whose key was already in the ledger
    peak_concurrency: int = 0

    def __repr__(self) -> str:
        url = self.url if self._server is not None else "stopped"
        return f"FakePaygentic({url}, {len(self.arrivals)} requests, {len(self.ledger)} keys)"

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._conns: dict[int, socket.socket] = {}
        self._next_conn = 0
        self._active = 0
        self._key_counts: dict[str | None, int] = {}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> FakePaygentic:
        """Listen on a free loopback port and serve in a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-paygentic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; black-holed and delayed requests are released (their connections reset)."""
        self._stopped.set()
        server = self._server
        if server is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            conns = list(self._conns.values())
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> FakePaygentic:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL, e.g. ``http://127.0.0.1:40123``."""
        assert self._server is not None, "start() the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # ---------------------------------------------------------------- queries

    def keys(self) -> set[str]:
        """Distinct idempotency keys stored."""
        with self._lock:
            return set(self.ledger)

    def amounts(self) -> dict[str, Decimal]:
        """Each stored event's ``data.amount``, parsed exactly."""
        with self._lock:
            bodies = dict(self.ledger)
        return {key: Decimal(json.loads(body, parse_float=Decimal)["data"]["amount"]) for key, body in bodies.items()}

    def arrivals_snapshot(self) -> list[Arrival]:
        """A copy of the request log."""
        with self._lock:
            return list(self.arrivals)

    def requests_for(self, key: str) -> list[Arrival]:
        """Every request that carried ``key``."""
        with self._lock:
            return [arrival for arrival in self.arrivals if arrival.key == key]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Poll ``predicate`` until it is true or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    # ---------------------------------------------------------------- handler callbacks

    def _open(self, conn: socket.socket) -> int:
        with self._lock:
            self._next_conn += 1
            self._conns[self._next_conn] = conn
            return self._next_conn

    def _close(self, conn: socket.socket) -> None:
        with self._lock:
            for conn_id, known in list(self._conns.items()):
                if known is conn:
                    del self._conns[conn_id]

    def _arrive(self, at: float, port: int, conn_id: int, index: int, headers: dict[str, str], path: str) -> Arrival:
        with self._lock:
            arrival = Arrival(len(self.arrivals) + 1, at, port, conn_id, index, headers.get("authorization"),
                              headers, path)
            self.arrivals.append(arrival)
            self._active += 1
            self.peak_concurrency = max(self.peak_concurrency, self._active)
            return arrival

    def _leave(self) -> None:
        with self._lock:
            self._active -= 1

    def _count_key(self, arrival: Arrival, key: str | None, body: bytes) -> int:
        with self._lock:
            arrival.key = key
            arrival.body = body
            count = self._key_counts[key] = self._key_counts.get(key, 0) + 1
            return count

    def _decide(self, info: RequestInfo) -> Action | None:
        script = self.script
        return None if script is None else script(info)

    def _process(self, arrival: Arrival, key: str | None, body: bytes) -> None:
        with self._lock:
            arrival.processed = True
            if key in self.ledger:
                self.duplicates += 1
            elif key is not None:
                self.ledger[key] = body


def fault_mix(reset: float = 0.0, error_500: float = 0.0, unavailable: float = 0.0, *, retry_after: str = "1",
              seed: int = 0, delay: float = 0.0) -> Script:
    """A script that, per request: processes then resets (``reset``), processes then answers 500 (``error_500``),
    or answers 503 with ``Retry-After`` without processing (``unavailable``); otherwise behaves, answering after
    ``delay`` seconds when it is set."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def script(info: RequestInfo) -> Action | None:
        if info.body is None:
            return None
        with lock:
            roll = rng.random()
        if roll < reset:
            return PROCESS_THEN_RESET
        if roll < reset + error_500:
            return process_then(500)
        if roll < reset + error_500 + unavailable:
            return respond(503, retry_after=retry_after)
        return respond(202, delay=delay) if delay > 0 else None

    return script


class FakePaygenticProcess:
    """The fake in a child process, so its CPU is not the client's (benchmarks, heavy tests).

    Args are those of :func:`fault_mix`, plus ``token``. :meth:`ledger` fetches what the server stored.
    """

    def __init__(self, *, token: str | None = None, reset: float = 0.0, error_500: float = 0.0,
                 unavailable: float = 0.0, retry_after: str = "1", seed: int = 0, delay: float = 0.0) -> None:
        self._args = [f"--token={token or ''}", f"--reset={reset}", f"--error-500={error_500}",
                      f"--unavailable={unavailable}", f"--retry-after={retry_after}", f"--seed={seed}",
                      f"--delay={delay}"]
        self._proc: subprocess.Popen[str] | None = None
        self.url = ""

    def __enter__(self) -> FakePaygenticProcess:
        self._proc = subprocess.Popen([sys.executable, __file__, *self._args], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, text=True)
        assert self._proc.stdout is not None
        self.url = self._proc.stdout.readline().strip()
        assert self.url.startswith("http://"), "the fake server did not start"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()

    def ledger(self) -> dict[str, Any]:
        """``{"ledger": {key: body}, "duplicates": n, "arrivals": [[key, body], ...]}``."""
        with urllib.request.urlopen(self.url + "/_ledger", timeout=30) as response:
            return dict(json.loads(response.read()))


def _serve_forever(argv: list[str]) -> None:
    """Serve until stdin closes; prints the URL first."""
    options = dict(arg.lstrip("-").split("=", 1) for arg in argv)
    script = fault_mix(
        float(options.get("reset", 0)), float(options.get("error-500", 0)), float(options.get("unavailable", 0)),
        retry_after=options.get("retry-after", "1"), seed=int(options.get("seed", 0)),
        delay=float(options.get("delay", 0)),
    )
    with FakePaygentic(token=options.get("token") or None, script=script) as fake:
        print(fake.url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    _serve_forever(sys.argv[1:])
