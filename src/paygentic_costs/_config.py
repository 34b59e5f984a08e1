"""Settings: arguments to ``configure()`` first, then environment variables, then defaults.

This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ._errors import ConfigurationError
from .export._base import Exporter

__all__ = ["DEFAULT_BASE_URL", "SANDBOX_BASE_URL", "Secret", "Settings", "resolve_settings"]

DEFAULT_BASE_URL = "https://api.paygentic.io"
SANDBOX_BASE_URL = "https://api.sandbox.paygentic.io"
# AWS Lambda, Google Cloud Functions / Cloud Run, Azure Functions.
SERVERLESS_ENV_VARS = ("AWS_LAMBDA_FUNCTION_NAME", "FUNCTION_TARGET", "K_SERVICE", "FUNCTIONS_WORKER_RUNTIME")
_SPOOL_OFF = ("off", "false", "no", "0", "none")
DEFAULT_SPOOL_MAX_BYTES = 256 * 1024 * 1024


class Secret:
    """An API key that never shows itself in a repr, a log line or an exception."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The key itself; only the HTTP layer calls this."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('****')" if self._value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class Settings:
    """The resolved configuration (what ``configure()`` produced)."""

    api_key: Secret
    base_url: str
    source: str
    rates: Any  # pricing.RateTable; typed loosely to keep this module free of pricing imports at import time
    exporter: Exporter | None
    max_queue_size: int
    max_in_flight: int
    shutdown_timeout: float
    spool_dir: Path | None
    durability: Literal["batch", "sync"]
    strict: bool
    propagate: bool
    state_dir: Path
    currency: str
    on_error: Callable[[str, str, str], None] | None = None
    disabled_integrations: frozenset[str] = field(default_factory=frozenset)
    spool_max_bytes: int = DEFAULT_SPOOL_MAX_BYTES
    spool_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    spool_explicit: bool = False  # spool_dir came from configure() or the environment, not the default

    @property
    def serverless(self) -> bool:
        """Running in AWS Lambda, Cloud Functions or Cloud Run (detected from their environment)."""
        return is_serverless()


def is_serverless() -> bool:
    """True when an environment variable of a known serverless platform is set."""
    return any(os.environ.get(name) for name in SERVERLESS_ENV_VARS)


def connection_from_env(base_url: str | None, api_key: str | None) -> tuple[str, str]:
    """Base URL and API key for the CLI: the flags, else the environment, else the defaults ("" for no key)."""
    url = base_url or _env("PAYGENTIC_BASE_URL") or DEFAULT_BASE_URL
    key = api_key or _env("PAYGENTIC_API_KEY") or _env("PAYGENTIC_BEARER_AUTH") or ""
    return url.rstrip("/"), key


def rates_from_env(rates: str | None) -> str | None:
    """The rate file for the CLI: the flag, else ``PAYGENTIC_COSTS_RATES``."""
    return rates or _env("PAYGENTIC_COSTS_RATES")


def _env(name: str) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else None


def _env_bool(name: str) -> bool | None:
    value = _env(name)
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigurationError(f"{name} must be true or false, got {value!r}")


def _default_state_dir() -> Path:
    base = _env("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "paygentic-costs"


def _writable(path: Path) -> bool:
    """Whether ``path`` exists writable, or could be created (its nearest existing ancestor is writable)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            return False
        probe = probe.parent
    return probe.is_dir() and os.access(probe, os.W_OK | os.X_OK)


def _resolve_spool(
    spool_dir: str | os.PathLike[str] | bool | None, state: Path, serverless: bool
) -> tuple[Path | None, bool]:
    """(directory or None for off, explicitly configured). Default: ``<state_dir>/spool`` when writable, off in
    detected serverless environments (their disk does not outlive the instance)."""
    value: object = spool_dir if spool_dir is not None else _env("PAYGENTIC_COSTS_SPOOL_DIR")
    word = value.strip().lower() if isinstance(value, str) else None
    if value is False or word in _SPOOL_OFF:
        return None, True
    if value is not None and value is not True and word not in ("on", "auto"):
        if not isinstance(value, (str, os.PathLike)):
            raise ConfigurationError(f"spool_dir must be a path, 'off' or False, got {value!r}")
        return Path(value), True
    explicit_on = value is True or word == "on"
    if serverless and not explicit_on:
        return None, False
    default = state / "spool"
    return (default, explicit_on) if explicit_on or _writable(default) else (None, False)


def _positive(name: str, value: float, *, minimum: float, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise ConfigurationError(f"{name} must be a number >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name} must be <= {maximum}, got {value!r}")


def resolve_settings(
    *,
    api_key: str | None,
    base_url: str | None,
    source: str | None,
    rates: Any,
    exporter: Exporter | None,
    max_queue_size: int,
    max_in_flight: int,
    shutdown_timeout: float,
    spool_dir: str | os.PathLike[str] | bool | None,
    durability: str,
    strict: bool | None,
    propagate: bool | None,
    state_dir: str | os.PathLike[str] | None,
    on_error: Callable[[str, str, str], None] | None,
    spool_max_bytes: int | None = None,
) -> Settings:
    """Merge arguments with the environment and validate everything; raise ``ConfigurationError`` on bad input."""
    from .pricing import RateTable  # deferred: genai-prices loads its catalog lazily, not at `import paygentic_costs`

    key = api_key if api_key is not None else (_env("PAYGENTIC_API_KEY") or _env("PAYGENTIC_BEARER_AUTH") or "")
    if not isinstance(key, str):
        raise ConfigurationError("api_key must be a string")
    url = (base_url or _env("PAYGENTIC_BASE_URL") or DEFAULT_BASE_URL).strip()
    if not url.startswith(("http://", "https://")):
        raise ConfigurationError(f"base_url must start with http:// or https://, got {url!r}")
    if url.endswith("/"):
        url = url[:-1]
    src = source or _env("PAYGENTIC_COSTS_SOURCE") or f"urn:paygentic-costs:{socket.gethostname()}"
    _positive("max_queue_size", max_queue_size, minimum=1)
    _positive("max_in_flight", max_in_flight, minimum=1, maximum=64)
    _positive("shutdown_timeout", shutdown_timeout, minimum=0, maximum=600)
    if durability not in ("batch", "sync"):
        raise ConfigurationError(f"durability must be 'batch' or 'sync', got {durability!r}")
    if exporter is not None and not isinstance(exporter, Exporter):
        raise ConfigurationError("exporter must have export(events, timeout) and shutdown() methods")
    if on_error is not None and not callable(on_error):
        raise ConfigurationError("on_error must be callable")
    rate_source = rates if rates is not None else _env("PAYGENTIC_COSTS_RATES")
    table = RateTable.load(rate_source)
    state = state_dir if state_dir is not None else _env("PAYGENTIC_COSTS_STATE_DIR")
    state_path = Path(state) if state is not None else _default_state_dir()
    spool, spool_explicit = _resolve_spool(
        spool_dir, state_path, is_serverless()
    )
    env_cap = _env("PAYGENTIC_COSTS_SPOOL_MAX_BYTES")
    try:
        cap = spool_max_bytes if spool_max_bytes is not None else int(env_cap or DEFAULT_SPOOL_MAX_BYTES)
    except ValueError:
        raise ConfigurationError(f"PAYGENTIC_COSTS_SPOOL_MAX_BYTES must be an integer, got {env_cap!r}") from None
    _positive("spool_max_bytes", cap, minimum=64 * 1024)
    synchronous = (_env("PAYGENTIC_COSTS_SPOOL_SYNCHRONOUS") or "NORMAL").upper()
    if synchronous not in ("NORMAL", "FULL"):
        raise ConfigurationError(f"PAYGENTIC_COSTS_SPOOL_SYNCHRONOUS must be NORMAL or FULL, got {synchronous!r}")
    env_strict = _env_bool("PAYGENTIC_COSTS_STRICT")
    env_propagate = _env_bool("PAYGENTIC_COSTS_PROPAGATE")
    disabled = frozenset(
        name.strip() for name in (_env("PAYGENTIC_COSTS_DISABLED_INTEGRATIONS") or "").split(",") if name.strip()
    )
    return Settings(
        api_key=Secret(key),
        base_url=url,
        source=src,
        rates=table,
        exporter=exporter,
        max_queue_size=int(max_queue_size),
        max_in_flight=int(max_in_flight),
        shutdown_timeout=float(shutdown_timeout),
        spool_dir=spool,
        durability=durability,  # type: ignore[arg-type]
        strict=bool(strict if strict is not None else env_strict),
        propagate=bool(propagate if propagate is not None else env_propagate),
        state_dir=state_path,
        currency=str(table.currency),
        on_error=on_error,
        disabled_integrations=disabled,
        spool_max_bytes=int(cap),
        spool_synchronous=synchronous,  # type: ignore[arg-type]
        spool_explicit=spool_explicit,
    )


def describe(settings: Settings) -> Mapping[str, object]:
    """A printable summary (no secrets) for ``doctor`` and debugging."""
    return {
        "api_key": "set" if settings.api_key else "not set",
        "base_url": settings.base_url,
        "source": settings.source,
        "currency": settings.currency,
        "strict": settings.strict,
        "spool_dir": str(settings.spool_dir) if settings.spool_dir else None,
        "state_dir": str(settings.state_dir),
    }
