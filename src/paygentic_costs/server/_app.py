"""The FastAPI application: response class, error bodies, bearer organisations, and the factory."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException

from paygentic_costs.client._json import dumps

from ._schemas import ApiProblem, pydantic_errors, validation_problem
from ._store import Store

__all__ = ["JSONBody", "Org", "create_app"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


class JSONBody(Response):
    """``application/json`` whose ``Decimal`` values are written with exactly their digits."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """Serialise ``content``."""
        return dumps(content).encode("utf-8")


_bearer = HTTPBearer(auto_error=False, description="Any token: each distinct token is its own organisation.")


async def organisation(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The organisation of the request's bearer token (a stable hash: the token itself is never stored)."""
    if credentials is None or not credentials.credentials:
        raise ApiProblem(
            401, "Missing or malformed Authorization header; expected 'Bearer <token>'", error="unauthorized"
        )
    return "org_" + hashlib.sha256(credentials.credentials.encode("utf-8")).hexdigest()[:24]


Org = Annotated[str, Depends(organisation)]


def _problem(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiProblem)
    return JSONBody(exc.body(), status_code=exc.status)


def _invalid_request(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    problem = validation_problem(pydantic_errors(exc.errors()))
    return JSONBody(problem.body(), status_code=problem.status)


def _http_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    error = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONBody({"message": str(exc.detail), "error": error}, status_code=exc.status_code, headers=exc.headers)


def _crash(_request: Request, _exc: Exception) -> Response:
    return JSONBody({"message": "Internal server error", "error": "internal_error"}, status_code=500)


def create_app(db_path: str | None = None, *, clock: Callable[[], datetime] | None = None) -> FastAPI:
    """Build a Paygentic-compatible API server for development, tests and demos.

    Every request needs ``Authorization: Bearer <token>``; each distinct token is its own organisation and sees
    only its own costs and events. Besides the API, ``GET /_local/events`` lists the organisation's stored events
    with when they arrived and how many times each was delivered (not part of the Paygentic API).

    Args:
        db_path: SQLite database file (created if absent); ``None`` keeps everything in memory.
        clock: Returns the current time as an aware ``datetime`` (default: the system clock, UTC). It stamps
            events without a timestamp, cost creation and updates, and drives the 24 h idempotency window.

    Returns:
        The ASGI application; ``app.state.store`` is its store.

    Example:
        >>> from fastapi.testclient import TestClient
        >>> client = TestClient(create_app())
        >>> client.get("/v0/costs", headers={"Authorization": "Bearer sk_test"}).json()["object"]
        'list'
    """
    from ._routes import build_router  # routes import this module's Org and JSONBody

    read_clock = clock or (lambda: datetime.now(timezone.utc))

    def now_us() -> int:
        moment = read_clock()
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return (moment - _EPOCH) // _MICROSECOND

    store = Store(db_path)
    app = FastAPI(
        title="Paygentic-compatible local server (paygentic-costs)",
        version="0.1.0",
        description="Costs, events, cost summary and report, compatible with the Paygentic API. "
        "For development, tests and demos.",
        default_response_class=JSONBody,
    )
    app.state.store = store
    app.add_exception_handler(ApiProblem, _problem)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _crash)
    app.include_router(build_router(store, now_us))
    return app
