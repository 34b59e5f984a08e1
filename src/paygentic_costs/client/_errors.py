"""Typed errors of the management client. None of them carries the API key."""

from __future__ import annotations

from typing import Any

from paygentic_costs._errors import PaygenticCostsError

__all__ = ["APIError", "AuthError", "FieldError", "NotFound", "RateLimited", "ValidationError"]


class FieldError(tuple[str, str]):
    """One field-level validation problem: ``(field, message)``."""

    __slots__ = ()

    @property
    def field(self) -> str:
        """The offending field (``"body"`` when the whole body is wrong)."""
        return self[0]

    @property
    def message(self) -> str:
        """What is wrong with it."""
        return self[1]


class APIError(PaygenticCostsError):
    """The API answered with an error status.

    Attributes:
        status_code: The HTTP status.
        message: The API's human-readable ``message``.
        code: The API's ``code`` or coarse ``error`` category, when it sent one.
        body: The parsed JSON error body (or ``None`` when it was not JSON).
    """

    def __init__(self, status_code: int, message: str, *, code: str | None = None, body: Any = None) -> None:
        super().__init__(f"{status_code}: {message}")
        self.status_code = status_code
        self.message = message
        self.code = code
        self.body = body


class NotFound(APIError):
    """404: the cost (or route) does not exist for this API key."""


class AuthError(APIError):
    """401 or 403: the API key is missing, wrong, or lacks permission."""


class ValidationError(APIError):
    """400 or 422: the request was rejected as invalid; ``errors`` lists field problems when the API sent them."""

    def __init__(
        self,
        status_code: int,
        message: str,
        *,
        code: str | None = None,
        body: Any = None,
        errors: tuple[FieldError, ...] = (),
    ) -> None:
        super().__init__(status_code, message, code=code, body=body)
        self.errors = errors


class RateLimited(APIError):
    """429 (or 503 with ``Retry-After``): back off; ``retry_after`` is the server's delay in seconds, if it sent one."""

    def __init__(
        self, status_code: int, message: str, *, code: str | None = None, body: Any = None, retry_after: float | None
    ) -> None:
        super().__init__(status_code, message, code=code, body=body)
        self.retry_after = retry_after
