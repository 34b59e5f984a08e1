"""A local Paygentic-compatible server (``pip install 'paygentic-costs[server]'``) for development, tests and demos.

It implements ``POST /v0/events`` (202, 24 h ``idempotencyKey`` de-duplication per organisation), cost create / list /
get / update / soft delete, ``GET /v0/costs/{id}/summary`` and ``GET /v0/costs/report`` on FastAPI over a SQLite
file, with exact ``Decimal`` money. Each bearer token is its own organisation.

Semantics the API leaves open, fixed here: the customer of an event is its ``subject``, else its
``externalSubject`` (there are no customers to resolve against), and both the summary's ``subject`` filter and the
report's ``customer`` grouping use it; a dimension that is missing or ``null`` in an event has the value ``""``;
time-series windows are UTC-aligned and only windows holding events are listed; UNIQUE_COUNT needs a
``valueProperty`` like SUM/AVG/MIN/MAX/LATEST.
"""

from __future__ import annotations

from ._app import create_app
from ._local import LocalServer, serve

__all__ = ["LocalServer", "create_app", "serve"]
