"""Running the server: ``serve()`` in the foreground, ``LocalServer`` on a free port in a background thread."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from datetime import datetime
from types import TracebackType

import uvicorn

from ._app import create_app

__all__ = ["LocalServer", "serve"]


def serve(host: str = "127.0.0.1", port: int = 8787, db_path: str | None = "paygentic-local.db") -> None:
    """Run the local Paygentic-compatible server until interrupted.

    Args:
        host: Interface to bind.
        port: TCP port.
        db_path: SQLite file that keeps costs and events across restarts (``None``: in memory).

    Example:
        >>> serve(port=8787)  # doctest: +SKIP
    """
    uvicorn.run(create_app(db_path), host=host, port=port, log_level="warning")


class LocalServer:
    """The local server on a free port of 127.0.0.1, in a background thread (for tests, demos and the CLI).

    Args:
        db_path: SQLite file, or ``None`` for an in-memory store.
        host: Interface to bind.
        port: TCP port; 0 picks a free one.
        clock: Passed to :func:`create_app`.

    Example:
        >>> import httpx
        >>> with LocalServer() as server:
        ...     httpx.get(server.url + "/v0/costs", headers={"Authorization": "Bearer t"}).status_code
        200
    """

    def __init__(
        self,
        db_path: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.app = create_app(db_path, clock=clock)
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(self.app, log_level="warning", access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:53121`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> LocalServer:
        """Start serving and wait until the socket accepts requests.

        Raises:
            RuntimeError: The server did not start within ``timeout`` seconds.
        """
        if self._thread is not None:
            return self
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="paygentic-local-server", daemon=True
        )
        self._thread.start()
        waited = 0.0
        while not self._server.started:
            if not self._thread.is_alive() or waited >= timeout:
                raise RuntimeError("the local server did not start")
            threading.Event().wait(0.01)
            waited += 0.01
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the store; idempotent."""
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout)
            self._thread = None
        self._socket.close()
        self.app.state.store.close()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
