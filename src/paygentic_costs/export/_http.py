"""The Paygentic exporter: one ``POST /v0/events`` per event, concurrent, over pooled keep-alive connections.

It runs each batch on a private asyncio loop (never the application's) with one ``httpx.AsyncClient``. The loop's
default executor runs inline, so name resolution never starts a thread: the exporter keeps working at interpreter
exit, when new threads are refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import email.utils
import json
import logging
import math
import selectors
import threading
import time
from collections.abc import Callable, Collection, Sequence
from datetime import timezone
from typing import Any

import httpx

from .._context import suppressed
from .._errors import ConfigurationError
from .._events import CostEvent
from .._guard import report_internal_error
from ._base import NOT_SENT, Outcome
from ._transport import KeepAliveTransport, proxy_configured

__all__ = ["DEFAULT_BASE_URL", "PaygenticExporter", "classify_response", "parse_retry_after"]

DEFAULT_BASE_URL = "https://api.paygentic.io"
_MAX_IN_FLIGHT_LIMIT = 64
_REASON_LIMIT = 500
_POLL_INTERVAL = 0.02  # how soon a streaming export looks for new events while requests are in flight
_NO_RETRY_5XX = frozenset({501, 505})
_RETRY_4XX = frozenset({408, 425, 429})
_STOP_BATCH = frozenset({401, 403, 429, 503})  # stop starting new requests of the batch on these answers
# Exceptions that, on a reused keep-alive connection, mean "the server closed it while idle": resend at once.
_STALE_CONNECTION_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError, httpx.ConnectError)

# Loops, clients and transports a forked child inherited: referenced forever so no finaliser runs on them.
_inherited: list[object] = []

# True while this module sends: httpx's per-request INFO line is dropped for our own traffic only.
_exporting: contextvars.ContextVar[bool] = contextvars.ContextVar("paygentic_costs_exporting", default=False)


class _OwnTrafficFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno > logging.INFO or not _exporting.get()


_httpx_logger = logging.getLogger("httpx")
if not any(isinstance(f, _OwnTrafficFilter) for f in _httpx_logger.filters):
    _httpx_logger.addFilter(_OwnTrafficFilter())


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("paygentic-costs")
    except Exception:
        from .. import __version__

        return __version__


class _InlineExecutor(concurrent.futures.ThreadPoolExecutor):
    """Runs submitted calls on the calling thread (the loop's ``getaddrinfo``): no thread is ever started.

    A ``ThreadPoolExecutor`` subclass only because ``loop.set_default_executor`` insists on one.
    """

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)
        return future


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds (fractions allowed) or an HTTP-date.

    Returns None when the header is absent or unreadable; never negative.
    """
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def _error_message(body: bytes) -> str | None:
    if not body:
        return None
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        text = body[:_REASON_LIMIT].decode("utf-8", "replace").strip()
        return text or None
    if isinstance(parsed, dict):
        message = parsed.get("message")
        if isinstance(message, str) and message:
            return message[:_REASON_LIMIT]
    return None


_ACKS: dict[int, Outcome] = {}


def classify_response(status: int, retry_after: str | None = None, body: bytes = b"") -> Outcome:
    """Map one HTTP answer to an :class:`Outcome` (delivery.md §4.5).

    2xx ack; 408/425/429 and 5xx except 501/505 retry (``Retry-After`` parsed); 409 retry (the pipeline sets it
    aside as ``conflict`` after three); 401/403 auth; anything else is rejected with the server's ``message``.
    """
    if 200 <= status < 300:
        outcome = _ACKS.get(status)
        if outcome is None:
            outcome = _ACKS[status] = Outcome("ack", status=status)
        return outcome
    if status in (401, 403):
        return Outcome("auth", status=status, reason=_error_message(body) or f"HTTP {status}")
    if status == 409:
        return Outcome("retry", parse_retry_after(retry_after), "conflict", status)
    if status in _RETRY_4XX or (500 <= status < 600 and status not in _NO_RETRY_5XX):
        return Outcome("retry", parse_retry_after(retry_after), f"HTTP {status}", status)
    return Outcome("reject", reason=_error_message(body) or f"HTTP {status}", status=status)


class _Batch:
    __slots__ = ("stop",)

    def __init__(self) -> None:
        self.stop = False


class PaygenticExporter:
    """Delivers cost events to Paygentic's ``POST /v0/events``, one request per event, ``max_in_flight`` at once.

    Args:
        api_key: the Paygentic API key (sent as ``Authorization: Bearer <key>``; a key that already starts with
            ``"bearer "`` is sent as is). It never appears in ``repr()``, logs or error messages.
        base_url: the API root; one trailing ``/`` is stripped and a path prefix is kept.
        max_in_flight: concurrent requests (and pooled connections), 1 to 64.
        timeout: read and write timeout of one request (connect and pool: 5 s at most).
        transport: an ``httpx.AsyncBaseTransport`` to send through (tests, proxies, custom TLS).
        user_agent: the ``User-Agent`` header.

    Raises:
        ConfigurationError: an empty API key or an out-of-range setting.
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        max_in_flight: int = 8,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        user_agent: str | None = None,
    ) -> None:
        if not isinstance(api_key, str) or not api_key.strip():
            raise ConfigurationError("PaygenticExporter needs a non-empty api_key")
        if not 1 <= max_in_flight <= _MAX_IN_FLIGHT_LIMIT:
            raise ConfigurationError(f"max_in_flight must be between 1 and {_MAX_IN_FLIGHT_LIMIT}, got {max_in_flight}")
        if not timeout > 0:
            raise ConfigurationError(f"timeout must be positive, got {timeout!r}")
        root = base_url[:-1] if base_url.endswith("/") else base_url
        try:
            url = httpx.URL(root + "/v0/events")
        except Exception as exc:
            raise ConfigurationError(f"invalid base_url {base_url!r}: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ConfigurationError(f"base_url must be an http(s) URL, got {base_url!r}")
        self.base_url = root
        self._url = url
        authorization = api_key if api_key[:7].lower() == "bearer " else f"Bearer {api_key}"
        self._headers = {
            "Authorization": authorization,
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent or f"paygentic-costs/{_version()}",
        }
        self._max_in_flight = max_in_flight
        self._concurrency = max_in_flight
        self._timeout = httpx.Timeout(connect=min(5.0, timeout), read=timeout, write=timeout, pool=min(5.0, timeout))
        self._transport = transport
        self._init_runtime_state()

    def _init_runtime_state(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._direct: KeepAliveTransport | None = None  # the client's transport, when it is our own
        self._run_lock = threading.Lock()  # one thread runs the private loop at a time
        self._tasks: Collection[asyncio.Task[None]] = ()
        self._closed = False
        self._close_requested = False
        self.in_flight = 0
        self.peak_in_flight = 0
        self.reconnects = 0  # stale keep-alive connections replaced without counting a failure

    def __repr__(self) -> str:
        return f"PaygenticExporter(base_url={self.base_url!r}, api_key=<redacted>, max_in_flight={self._max_in_flight})"

    __str__ = __repr__

    def set_concurrency(self, limit: int) -> None:
        """Requests started at once from now on (the pipeline's adaptive limit), capped at ``max_in_flight``."""
        self._concurrency = max(1, min(limit, self._max_in_flight))

    # ------------------------------------------------------------------ Exporter

    def export(self, events: Sequence[CostEvent], timeout: float) -> Sequence[Outcome]:
        """Send each event; one outcome per event, in order, within ``timeout`` seconds. Never raises for a
        delivery failure. Runs the private loop on the calling thread and starts no thread."""
        if self._closed or not events:
            return [NOT_SENT] * len(events)
        with self._run_lock:
            if self._closed:
                return [NOT_SENT] * len(events)
            loop = self._ensure_loop()
            token = _exporting.set(True)
            try:
                with suppressed():  # our own HTTP traffic is never instrumented as a cost
                    return loop.run_until_complete(self._export(list(events), max(timeout, 0.001)))
            finally:
                _exporting.reset(token)
                if self._close_requested:
                    self._close_locked()

    def export_stream(
        self,
        take: Callable[[int], Sequence[tuple[Any, CostEvent]]],
        done: Callable[[Any, Outcome], None],
        deadline: Callable[[], float | None],
    ) -> None:
        """Keep up to the concurrency limit of requests in flight, pulling events with ``take(free_slots)`` as
        slots free up and reporting each with ``done(token, outcome)`` as soon as it finishes. Returns when
        ``take`` has nothing and nothing is in flight, or at ``deadline()`` (``time.monotonic()``), when what is
        still in flight is cancelled and reported as ``retry``. Runs on the calling thread, starts no thread."""
        if self._closed:
            return
        with self._run_lock:
            if self._closed:
                return
            loop = self._ensure_loop()
            token = _exporting.set(True)
            try:
                with suppressed():
                    loop.run_until_complete(self._stream(take, done, deadline))
            finally:
                _exporting.reset(token)
                if self._close_requested:
                    self._close_locked()

    def shutdown(self) -> None:
        """Cut an export in progress short, then close the client and the loop. Safe from any thread."""
        self._closed = True
        loop = self._loop
        if loop is not None and loop.is_running():
            with contextlib.suppress(RuntimeError):  # the loop may close in between
                loop.call_soon_threadsafe(self._cancel_tasks)
        if self._run_lock.acquire(timeout=2.0):
            try:
                self._close_locked()
            finally:
                self._run_lock.release()
        else:  # the loop is still busy: the export in progress closes it when it returns
            self._close_requested = True

    def after_fork_in_child(self) -> None:
        """Forget the inherited client and loop without closing them: their sockets belong to the parent.

        The inherited objects are kept referenced (a finaliser closing them could still reach the parent's
        connections), our own transport's descriptors are pointed at ``/dev/null``, and the old loop is closed
        when it can be, which only closes this process's copies of its descriptors.
        """
        loop, client, direct = self._loop, self._client, self._direct
        if direct is not None:
            direct.detach_after_fork()
        if loop is not None and not loop.is_running():
            with contextlib.suppress(Exception):
                loop.close()
        _inherited.extend(item for item in (loop, client, direct) if item is not None)
        self._init_runtime_state()

    # ------------------------------------------------------------------ internals

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None or loop.is_closed():
            # poll(2) keeps registrations in this process; an epoll instance would be shared with forked
            # children, and a child's cleanup could then unregister the parent's sockets.
            selector = selectors.PollSelector() if hasattr(selectors, "PollSelector") else None
            loop = self._loop = asyncio.SelectorEventLoop(selector)
            loop.set_default_executor(_InlineExecutor())
        return loop

    async def _stream(
        self,
        take: Callable[[int], Sequence[tuple[Any, CostEvent]]],
        done: Callable[[Any, Outcome], None],
        deadline: Callable[[], float | None],
    ) -> None:
        client = self._get_client()
        loop = asyncio.get_running_loop()
        running: set[asyncio.Task[None]] = set()
        self._tasks = running
        try:
            while True:
                limit = deadline()
                now = time.monotonic()
                if limit is not None and now >= limit:
                    return
                free = self._concurrency - len(running)
                if free > 0 and not self._closed:
                    for token, event in take(free):
                        task = loop.create_task(self._deliver_one(client, token, event, done))
                        running.add(task)
                        task.add_done_callback(running.discard)
                if not running:
                    return
                # Wake on the first completion, or soon anyway to pick up new events and notice the deadline.
                wait = _POLL_INTERVAL if limit is None else max(0.0, min(_POLL_INTERVAL, limit - now))
                await asyncio.wait(set(running), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if running:
                for task in running:
                    task.cancel()
                await asyncio.wait(set(running))
            self._tasks = set()

    async def _deliver_one(
        self, client: httpx.AsyncClient, token: Any, event: CostEvent, done: Callable[[Any, Outcome], None]
    ) -> None:
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        try:
            outcome = await self._send(client, event, None)
        except asyncio.CancelledError:  # deadline or shutdown: it may or may not have been processed
            outcome = Outcome("retry", reason="timeout")
        finally:
            self.in_flight -= 1
        try:
            done(token, outcome)
        except Exception as exc:
            report_internal_error(exc, "export.PaygenticExporter.done")

    def _cancel_tasks(self) -> None:
        for task in list(self._tasks):
            task.cancel()

    def _close_locked(self) -> None:
        self._close_requested = False
        loop, client = self._loop, self._client
        self._loop = self._client = self._direct = None
        if loop is None or loop.is_closed():
            return
        try:
            if client is not None:
                loop.run_until_complete(client.aclose())
            loop.run_until_complete(loop.shutdown_asyncgens())
        except Exception as exc:  # e.g. called from a thread that runs another loop
            logging.getLogger("paygentic_costs.internal").debug("closing the export client failed: %r", exc)
        finally:
            loop.close()

    def _get_client(self) -> httpx.AsyncClient:
        client = self._client
        if client is None:
            n = self._max_in_flight
            transport = self._transport
            if transport is None and not proxy_configured(self._url):
                transport = self._direct = KeepAliveTransport(max_connections=n, keepalive_expiry=5.0)
            client = self._client = httpx.AsyncClient(
                transport=transport,
                limits=httpx.Limits(max_connections=n, max_keepalive_connections=n, keepalive_expiry=5.0),
                timeout=self._timeout,
                follow_redirects=True,
            )
        return client

    async def _export(self, events: list[CostEvent], timeout: float) -> list[Outcome]:
        client = self._get_client()
        semaphore = asyncio.Semaphore(self._concurrency)
        batch = _Batch()
        outcomes: list[Outcome | None] = [None] * len(events)
        started = [False] * len(events)

        async def deliver(index: int, event: CostEvent) -> None:
            async with semaphore:
                if batch.stop or self._closed:
                    outcomes[index] = NOT_SENT
                    return
                started[index] = True
                self.in_flight += 1
                if self.in_flight > self.peak_in_flight:
                    self.peak_in_flight = self.in_flight
                try:
                    outcomes[index] = await self._send(client, event, batch)
                finally:
                    self.in_flight -= 1

        loop = asyncio.get_running_loop()
        tasks = self._tasks = [loop.create_task(deliver(i, event)) for i, event in enumerate(events)]
        try:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            if pending:
                for task in pending:
                    task.cancel()
                await asyncio.wait(pending)
        finally:
            self._tasks = ()
        timed_out = Outcome("retry", reason="timeout")
        return [
            outcome if outcome is not None else (timed_out if started[i] else NOT_SENT)
            for i, outcome in enumerate(outcomes)
        ]

    async def _send(self, client: httpx.AsyncClient, event: CostEvent, batch: _Batch | None) -> Outcome:
        try:
            body = event.to_json()
        except Exception as exc:  # an event that cannot be serialised can never be delivered
            return Outcome("reject", reason=f"invalid_event: {type(exc).__name__}: {exc}"[:_REASON_LIMIT])
        for attempt in (0, 1):
            fresh_connection = False
            reused_connection = False

            async def trace(name: str, info: dict[str, Any]) -> None:
                nonlocal fresh_connection, reused_connection
                if name.startswith("connection.connect_tcp"):
                    fresh_connection = True
                elif name == "http11.send_request_headers.started" and not fresh_connection:
                    reused_connection = True

            request = httpx.Request(
                "POST", self._url, headers=self._headers, content=body,
                extensions={"timeout": self._timeout.as_dict(), "trace": trace},
            )
            try:
                direct = self._direct
                if direct is not None:
                    # Our own transport needs none of the client's cookie, auth or hook machinery, which costs
                    # about as much CPU per request as the transport itself; redirects still go through it.
                    response = await direct.handle_async_request(request)
                    if response.is_redirect:
                        response = await client.send(request)
                else:
                    response = await client.send(request)
            except httpx.TimeoutException as exc:
                return Outcome("retry", reason=f"network: {type(exc).__name__}")
            except _STALE_CONNECTION_ERRORS as exc:
                if attempt == 0 and reused_connection and not self._closed:
                    self.reconnects += 1  # a keep-alive connection the server had closed: resend at once
                    continue
                return Outcome("retry", reason=f"network: {type(exc).__name__}")
            except httpx.HTTPError as exc:
                return Outcome("retry", reason=f"network: {type(exc).__name__}")
            except Exception as exc:  # a custom transport's own failure: keep the event, report the fault
                report_internal_error(exc, "export.PaygenticExporter.send")
                return Outcome("retry", reason=f"transport error: {type(exc).__name__}")
            status = response.status_code
            outcome = classify_response(status, response.headers.get("retry-after"), response.content)
            if batch is not None and (status in _STOP_BATCH or outcome.retry_after is not None):
                batch.stop = True  # the server asked everyone to back off: start nothing more in this batch
            return outcome
        return Outcome("retry", reason="network: reconnect failed")
