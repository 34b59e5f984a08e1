"""JSON with exact money: numbers parse to ``Decimal`` and ``Decimal`` serialises to its own digits.

Shared by the management client (request bodies, responses) and the local server (stored event data, responses).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from paygentic_costs._events import decimal_to_json

__all__ = ["dumps", "loads"]

_encode_str: Callable[[str], str] = json.JSONEncoder(ensure_ascii=False).encode


def _reject_constant(name: str) -> Any:
    # json accepts NaN/Infinity by default; they are not JSON and have no place in money.
    raise ValueError(f"{name} is not a valid JSON number")


def loads(text: str | bytes) -> Any:
    """Parse JSON, every non-integer number as an exact ``Decimal``; ``NaN``/``Infinity`` are rejected.

    Args:
        text: A JSON document.

    Returns:
        The parsed value.

    Raises:
        ValueError: ``text`` is not valid JSON.

    Example:
        >>> loads('{"amount": 0.1}')
        {'amount': Decimal('0.1')}
    """
    return json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)


def dumps(value: Any) -> str:
    """Compact JSON where a ``Decimal`` is written as a plain JSON number with exactly its digits.

    Args:
        value: Nested dicts, lists and tuples of str, int, ``Decimal``, float, bool and None.

    Returns:
        The JSON text.

    Raises:
        ValueError: A number is not finite.
        TypeError: A value is of a type JSON cannot carry.

    Example:
        >>> dumps({"amount": Decimal("3E-5"), "n": [1, None]})
        '{"amount":0.00003,"n":[1,null]}'
    """
    parts: list[str] = []
    _write(value, parts.append)
    return "".join(parts)


def _write(value: Any, out: Callable[[str], object]) -> None:
    if isinstance(value, str):
        out(_encode_str(value))
    elif value is None:
        out("null")
    elif value is True:
        out("true")
    elif value is False:
        out("false")
    elif isinstance(value, int):
        out(str(value))
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"{value} is not a finite number")
        out(decimal_to_json(value))
    elif isinstance(value, float):
        out(json.dumps(value, allow_nan=False))
    elif isinstance(value, Mapping):
        out("{")
        first = True
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"JSON object keys must be str, not {type(key).__name__}")
            if not first:
                out(",")
            first = False
            out(_encode_str(key))
            out(":")
            _write(item, out)
        out("}")
    elif isinstance(value, (list, tuple)):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _write(item, out)
        out("]")
    else:
        raise TypeError(f"value of type {type(value).__name__} is not JSON serializable")
