"""A tiny WSGI app for the gunicorn tests: each request records one cost keyed by its ``?n=`` parameter.

It calls ``configure()`` at import as an application would (key and URL come from the environment), so with
``--preload`` the runtime is built in the gunicorn master and inherited by the forked workers."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

import paygentic_costs as pc

pc.configure(source="https://gunicorn.test")


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Record one cost for the request ``?n=<number>`` and answer with the worker's pid."""
    n = parse_qs(environ.get("QUERY_STRING", "")).get("n", ["0"])[0]
    with pc.job(f"gunicorn-{n}", customer="cus_gunicorn"):
        pc.record("cost.request", amount="0.0010", provider="test", operation="request")
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
