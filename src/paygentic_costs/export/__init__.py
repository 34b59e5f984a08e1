"""Delivery: the background pipeline and the exporters it hands cost events to.

``DeliveryPipeline`` queues events (``submit()`` is O(1) and never raises) and delivers them on one lazily started
worker thread through an ``Exporter``: ``PaygenticExporter`` for the API, or ``ConsoleExporter``,
``JsonlExporter`` and ``InMemoryExporter`` for development and tests.
"""

from __future__ import annotations

from ._base import Exporter, Outcome
from ._dead_letter import SetAside
from ._http import PaygenticExporter
from ._processor import DeliveryPipeline
from ._simple import ConsoleExporter, InMemoryExporter, JsonlExporter

__all__ = [
    "ConsoleExporter",
    "DeliveryPipeline",
    "Exporter",
    "InMemoryExporter",
    "JsonlExporter",
    "Outcome",
    "PaygenticExporter",
    "SetAside",
]
