"""A lean HTTP/1.1 keep-alive transport for the exporter's ``httpx.AsyncClient``.

Why not httpx's default transport: the exporter sends one small POST per event, so per-request CPU is the cost
that matters, and the httpcore/anyio stack spends roughly ten times more CPU per request than this transport does
(measured in ``bench/bench_exporter.py``). It speaks just what ``POST /v0/events`` needs: HTTP/1.1 over TCP or TLS,
pooled keep-alive connections, ``Content-Length`` or chunked response bodies, and httpx's exception types and
timeouts, so the exporter's retry logic cannot tell the difference. When a proxy is configured in the environment
the exporter uses httpx's default transport instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.request import getproxies, proxy_bypass

import httpx

__all__ = ["KeepAliveTransport", "proxy_configured"]

_Trace = Callable[[str, dict[str, Any]], Awaitable[None]]
_MAX_LINE = 65536
_MAX_HEADERS = 100


def proxy_configured(url: httpx.URL) -> bool:
    """True when the environment routes ``url`` through a proxy (httpx's default transport handles those)."""
    proxies = getproxies()
    if not proxies.get(url.scheme) and not proxies.get("all"):
        return False
    try:
        return not proxy_bypass(url.host)
    except Exception:
        return True


class _Conn:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float, expiry: float) -> bool:
        return not (self.writer.is_closing() or self.reader.at_eof() or now - self.idle_since > expiry)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing an already broken connection: nothing to release
            self.writer.close()


class _Timer:
    """Cancels the current task after a delay (cheaper than ``wait_for``, which creates a task per call)."""

    __slots__ = ("fired", "handle")

    def __init__(self, delay: float | None) -> None:
        self.fired = False
        self.handle: asyncio.TimerHandle | None = None
        if delay is not None:
            task = asyncio.current_task()
            if task is not None:
                self.handle = asyncio.get_running_loop().call_later(delay, self._fire, task)

    def _fire(self, task: asyncio.Task[Any]) -> None:
        self.fired = True
        task.cancel()

    def cancel(self) -> None:
        if self.handle is not None:
            self.handle.cancel()


class KeepAliveTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 with a pool of keep-alive connections per origin.

    Args:
        max_connections: connections open at once (requests beyond it wait, up to the pool timeout).
        keepalive_expiry: idle connections older than this are closed instead of reused.
        ssl_context: for https (default: httpx's, with certifi's CA bundle).
    """

    def __init__(
        self, *, max_connections: int = 8, keepalive_expiry: float = 5.0, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._max_connections = max_connections
        self._keepalive_expiry = keepalive_expiry
        self._ssl_context = ssl_context
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._open: set[_Conn] = set()  # every live connection, idle or busy
        self._slots: asyncio.Semaphore | None = None
        self._closed = False

    def _tls(self) -> ssl.SSLContext:
        if self._ssl_context is None:
            self._ssl_context = httpx.create_ssl_context()
        return self._ssl_context

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send ``request`` and read the whole response."""
        if self._closed:
            raise httpx.ConnectError("the transport is closed", request=request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout", {})
        trace: _Trace | None = request.extensions.get("trace")
        if self._slots is None:
            self._slots = asyncio.Semaphore(self._max_connections)
        timer = _Timer(timeouts.get("pool"))
        try:
            await self._slots.acquire()
        except asyncio.CancelledError:
            if timer.fired:
                raise httpx.PoolTimeout("no connection available", request=request) from None
            raise
        finally:
            timer.cancel()
        try:
            return await self._exchange(request, timeouts, trace)
        finally:
            self._slots.release()

    async def _exchange(
        self, request: httpx.Request, timeouts: dict[str, float | None], trace: _Trace | None
    ) -> httpx.Response:
        url = request.url
        scheme = url.scheme
        port = url.port or (443 if scheme == "https" else 80)
        origin = (scheme, url.host, port)
        conn = self._take(origin)
        if conn is None:
            if trace is not None:
                await trace("connection.connect_tcp.started", {"host": url.host, "port": port})
            conn = await self._connect(request, scheme, url.host, port, timeouts.get("connect"))
        if trace is not None:
            await trace("http11.send_request_headers.started", {"request": request})
        body = request.content
        head = [b"%s %s HTTP/1.1\r\n" % (request.method.encode("ascii"), url.raw_path)]
        for name, value in request.headers.raw:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"\r\n")
        head.append(body)
        timer = _Timer(timeouts.get("read"))
        keep = False
        try:
            try:
                conn.writer.write(b"".join(head))
                await conn.writer.drain()
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None
            status, headers, content, keep = await self._read_response(conn.reader, request)
        except asyncio.CancelledError:
            if timer.fired:
                raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
            raise
        finally:
            timer.cancel()
            if keep and not self._closed:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(origin, []).append(conn)
            else:
                self._open.discard(conn)
                conn.close()
        return httpx.Response(status, headers=headers, content=content, request=request,
                              extensions={"http_version": b"HTTP/1.1"})

    def _take(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        now = time.monotonic()
        while idle:
            conn = idle.pop()  # most recently used first: the least likely to have been closed by the server
            if conn.usable(now, self._keepalive_expiry):
                return conn
            self._open.discard(conn)
            conn.close()
        return None

    async def _connect(
        self, request: httpx.Request, scheme: str, host: str, port: int, timeout: float | None
    ) -> _Conn:
        tls = self._tls() if scheme == "https" else None
        timer = _Timer(timeout)
        try:
            reader, writer = await asyncio.open_connection(
                host, port, ssl=tls, server_hostname=host if tls is not None else None, limit=_MAX_LINE
            )
        except asyncio.CancelledError:
            if timer.fired:
                raise httpx.ConnectTimeout(f"connecting to {host}:{port} timed out", request=request) from None
            raise
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        finally:
            timer.cancel()
        conn = _Conn(reader, writer)
        self._open.add(conn)
        return conn

    async def _read_response(
        self, reader: asyncio.StreamReader, request: httpx.Request
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
                parts = line.split(None, 2)
                if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
                    raise httpx.RemoteProtocolError(f"malformed status line {line[:80]!r}", request=request)
                status = int(parts[1])
                headers: list[tuple[bytes, bytes]] = []
                length: int | None = None
                chunked = False
                close = parts[0] == b"HTTP/1.0"
                while True:
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n"):
                        break
                    if not line or len(headers) >= _MAX_HEADERS:
                        raise httpx.RemoteProtocolError("incomplete response headers", request=request)
                    name, _, value = line.partition(b":")
                    name, value = name.strip(), value.strip()
                    headers.append((name, value))
                    lowered = name.lower()
                    if lowered == b"content-length":
                        length = int(value)
                    elif lowered == b"transfer-encoding":
                        chunked = b"chunked" in value.lower()
                    elif lowered == b"connection":
                        close = b"close" in value.lower()
                if 100 <= status < 200:
                    continue  # an interim answer (100 Continue): the real one follows
                break
            if status in (204, 304) or request.method == "HEAD":
                content = b""
            elif chunked:
                content = await self._read_chunked(reader)
            elif length is not None:
                content = await reader.readexactly(length)
            else:
                content = await reader.read()
                close = True
        except asyncio.IncompleteReadError:
            raise httpx.RemoteProtocolError("the server closed the connection mid-response", request=request) from None
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise httpx.RemoteProtocolError(f"malformed response: {exc}", request=request) from None
        except OSError as exc:
            raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None
        return status, headers, content, not close

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        chunks: list[bytes] = []
        while True:
            size = int((await reader.readline()).split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def aclose(self) -> None:
        """Close every connection."""
        self._closed = True
        self._idle = {}
        conns, self._open = self._open, set()
        for conn in conns:
            conn.close()

    def detach_after_fork(self) -> None:
        """In a forked child: point every inherited socket descriptor at ``/dev/null``.

        The parent still uses these connections. Whatever the child's copies of the old objects do later (a
        finaliser closing a transport, a TLS close_notify), it then reaches ``/dev/null``, never the parent's
        connection.
        """
        self._closed = True
        conns, self._open, self._idle = self._open, set(), {}
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for conn in conns:
                sock = conn.writer.get_extra_info("socket")
                fd = sock.fileno() if sock is not None else -1
                if fd >= 0:
                    os.dup2(devnull, fd)
        finally:
            os.close(devnull)
