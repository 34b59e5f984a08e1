"""The public API for writing integrations: an Instrumentor base, declarative patches, finalize-once stream proxies.

The one rule: **integrations translate provider data; the core prices, attributes and emits.** An integration
declares what to patch (:class:`Patch`), and in each wrapper opens a call, runs the SDK, and hands the provider's
usage to :meth:`CallHandle.finish`. It never touches pricing, exporters or the queue.

A minimal wrapper::

    def _wrap_create(self, wrapped, instance, args, kwargs):
        call = self.start_call("chat.completions", model=kwargs.get("model"))
        if call is None:  # disabled, suppressed, or an outer layer already records this call
            return wrapped(*args, **kwargs)
        with call:  # marks the call active; an exception marks it failed and propagates untouched
            response = wrapped(*args, **kwargs)
        with guard("myprovider.extract"):
            call.finish(usage_from(response), model=response.model, request_id=response.id)
        return response

Streams: return ``SyncStreamProxy(stream, on_chunk=..., on_end=...)`` (or ``AsyncStreamProxy``); ``on_end`` runs
exactly once — on exhaustion, ``close()``, ``with`` exit, an error, or garbage collection of an abandoned stream.
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import inspect
import sys
import threading
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from dataclasses import dataclass
from types import FunctionType, MethodType, TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

import wrapt
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ._context import attribution_for_new_call, is_suppressed, suppressed
from ._errors import IntegrationUnavailable
from ._guard import guard, internal_logger, report_internal_error
from ._recorder import CallHandle, Reported, check_event_type
from .pricing import Usage

__all__ = [
    "AsyncStreamProxy",
    "CallHandle",
    "InstrumentationHandle",
    "Instrumentor",
    "Patch",
    "Reported",
    "SyncStreamProxy",
    "Usage",
    "guard",
    "is_suppressed",
    "suppressed",
]

# The `_self_` prefix keeps the marker on the wrapt wrapper itself: any other name is forwarded to (and would stay on)
# the wrapped original, so after uninstrument() the restored original would look "already ours" and never be re-patched.
if TYPE_CHECKING:
    _Proxy = wrapt.ObjectProxy[Any]
else:  # subscripting is for the type checker only
    _Proxy = wrapt.ObjectProxy

_MARKER = "_self_paygentic_costs_patch"
Wrapper = Callable[[Callable[..., Any], Any, tuple[Any, ...], dict[str, Any]], Any]


@dataclass(frozen=True)
class Patch:
    """One patch: wrap ``module.target`` (``"Class.method"`` or ``"function"``) with a wrapt-style wrapper.

    Attributes:
        module: Import path of the module that defines the target.
        target: Dotted attribute path inside the module.
        wrapper: ``wrapper(wrapped, instance, args, kwargs)`` (the ``wrapt`` signature, whatever the target is).
        reason: Why this patch exists and what it records (shown in ``doctor`` and in debug logs).
        optional: Skip silently when the target does not exist in this SDK version.
    """

    module: str
    target: str
    wrapper: Wrapper
    reason: str
    optional: bool = False


@dataclass
class _Applied:
    owner: Any
    attribute: str
    original: Any
    patched: Any


def _function_patch(original: FunctionType, wrapper: Wrapper, *, method: bool) -> Callable[..., Any]:
    """A plain Python function standing in for ``original`` (a function, or a method in a class dict).

    It calls ``wrapper(wrapped, instance, args, kwargs)`` exactly as ``wrapt.FunctionWrapper`` would: for a method,
    ``wrapped`` is the original bound to ``instance`` (also when called through the class with an explicit
    instance); for a module function, ``instance`` is None. ``functools.wraps`` keeps the name, docstring,
    ``__wrapped__`` (so ``inspect.signature`` shows the original's) and a coroutine function stays one.

    Why not ``wrapt`` here: these patches sit on every SDK call (``SyncAPIClient.request``), and paired in-process
    measurements (bench/RESULTS.md) put a ``FunctionWrapper`` on that path at tens of microseconds more per call
    than this function, for the same wrapper. ``wrapt`` still handles every other kind of attribute.
    """
    patched: Callable[..., Any]
    if inspect.iscoroutinefunction(original):
        if method:

            async def patched(self: Any, /, *args: Any, **kwargs: Any) -> Any:
                return await wrapper(MethodType(original, self), self, args, kwargs)
        else:

            async def patched(*args: Any, **kwargs: Any) -> Any:
                return await wrapper(original, None, args, kwargs)
    elif method:

        def patched(self: Any, /, *args: Any, **kwargs: Any) -> Any:
            return wrapper(MethodType(original, self), self, args, kwargs)
    else:

        def patched(*args: Any, **kwargs: Any) -> Any:
            return wrapper(original, None, args, kwargs)

    return functools.wraps(original)(patched)


class InstrumentationHandle:
    """Returned by ``instrument()``: a context manager (reverts on exit) with ``revert()``."""

    def __init__(self, instrumentor: Instrumentor) -> None:
        self._instrumentor = instrumentor

    def revert(self) -> None:
        """Restore every original this instrumentor replaced."""
        self._instrumentor.uninstrument()

    def __enter__(self) -> InstrumentationHandle:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.revert()


def _resolve(module: str, target: str) -> tuple[Any, str]:
    owner: Any = importlib.import_module(module)
    *path, attribute = target.split(".")
    for part in path:
        owner = getattr(owner, part)
    return owner, attribute


class Instrumentor(ABC):
    """Base class of every integration. Subclasses set the class attributes and implement :meth:`_patches`.

    Attributes:
        name: Stable id, used in ``pc.instrument("name")`` and as the entry-point name.
        distribution: The provider SDK's distribution name on PyPI (checked before importing it).
        supported: PEP 440 range of SDK versions this integration supports (``">=1.40,<4"``).
        provider: genai-prices provider id written to ``data.provider`` (``openai``, ``anthropic``, ``aws``...).
        default_event_type: The event type used unless ``instrument(event_type=...)`` overrides it.
    """

    name: ClassVar[str]
    distribution: ClassVar[str]
    supported: ClassVar[str]
    provider: ClassVar[str]
    default_event_type: ClassVar[str] = "cost.ai.inference"
    install_hint: ClassVar[str | None] = None

    def __init__(self) -> None:
        self.event_type = self.default_event_type
        self.enabled = False
        self._applied: list[_Applied] = []
        self._lock = threading.Lock()

    # -- availability -----------------------------------------------------------------------------------------------

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """Why this integration cannot be used here (SDK missing or out of range), or None when it can."""
        hint = cls.install_hint or f"pip install 'paygentic-costs-{cls.name}'"
        try:
            installed = importlib.metadata.version(cls.distribution)
        except importlib.metadata.PackageNotFoundError:
            return f"the {cls.distribution} package is not installed (install it, then: {hint})"
        try:
            if Version(installed) not in SpecifierSet(cls.supported):
                return f"{cls.distribution} {installed} is outside the supported range {cls.supported}"
        except (InvalidVersion, InvalidSpecifier):
            return f"cannot compare {cls.distribution} {installed} with {cls.supported}"
        return None

    # -- patching ---------------------------------------------------------------------------------------------------

    @abstractmethod
    def _patches(self) -> Iterable[Patch]:
        """The patches to apply, in order."""

    def instrument(self, *, event_type: str | None = None) -> InstrumentationHandle:
        """Patch the SDK globally. Idempotent: a second call changes only the options.

        Args:
            event_type: The event type for this integration's costs (default ``cost.ai.inference``).

        Returns:
            A handle that reverts the patches (also usable as a context manager).

        Raises:
            IntegrationUnavailable: the SDK is missing or out of the supported range.
        """
        reason = self.unavailable_reason()
        if reason is not None:
            raise IntegrationUnavailable(f"cannot instrument {self.name!r}: {reason}")
        with self._lock:
            if event_type is not None:
                self.event_type = check_event_type(event_type)
            self.enabled = True
            if self._applied:
                return InstrumentationHandle(self)
            for patch in self._patches():
                self._apply(patch)
        return InstrumentationHandle(self)

    def _apply(self, patch: Patch) -> None:
        try:
            owner, attribute = _resolve(patch.module, patch.target)
            # The raw class-dict entry, so static/class methods and descriptors are restored exactly.
            in_dict = isinstance(owner, type) and attribute in owner.__dict__
            original = owner.__dict__[attribute] if in_dict else getattr(owner, attribute)
        except (ImportError, AttributeError):
            if patch.optional:
                return  # absent in this SDK version: nothing to patch, by declaration
            raise
        if getattr(original, _MARKER, False):
            return  # already ours (e.g. a second instrumentor instance): never wrap twice
        patched: Any
        if type(original) is FunctionType:
            patched = _function_patch(original, patch.wrapper, method=isinstance(owner, type))
        else:  # a static/class method, builtin or other descriptor: wrapt binds it as the original would be bound
            patched = wrapt.FunctionWrapper(original, patch.wrapper)
        setattr(patched, _MARKER, True)
        setattr(owner, attribute, patched)
        self._applied.append(_Applied(owner, attribute, original, patched))
        internal_logger.debug("patched %s.%s: %s", patch.module, patch.target, patch.reason)

    def uninstrument(self) -> None:
        """Restore every original, in reverse order. A no-op when nothing was patched."""
        with self._lock:
            self.enabled = False
            self.event_type = self.default_event_type  # options last only as long as the instrumentation
            while self._applied:
                applied = self._applied.pop()
                try:
                    setattr(applied.owner, applied.attribute, applied.original)
                except Exception as exc:
                    report_internal_error(exc, f"{self.name}.uninstrument")

    @property
    def is_instrumented(self) -> bool:
        """True while patches are applied."""
        return bool(self._applied)

    # -- calls ------------------------------------------------------------------------------------------------------

    def start_call(self, operation: str, *, model: str | None = None) -> CallHandle | None:
        """Open a billable call, or return None when this one must not be recorded.

        None means: the integration is disabled, instrumentation is suppressed (our own export traffic), or an outer
        layer is already recording this call (one event per operation, never two).
        """
        if not self.enabled:
            return None
        try:
            attribution = attribution_for_new_call()
            if attribution is None:
                return None
            runtime = (_runtime_module or _load_runtime_module())._runtime
            if runtime is None:  # not configured yet: configure from the environment, as every entry point does
                runtime = _runtime_module.get_runtime()
            # The handle is built here rather than through Recorder.start_call: this runs on every SDK call.
            return CallHandle(runtime.recorder, self.provider, operation, self.event_type, model, attribution)
        except Exception as exc:
            report_internal_error(exc, f"{self.name}.start_call")
            return None


# ``_runtime`` is imported on the first call, as before, but only once: an import statement in start_call cost
# microseconds on every call. The module is kept, not its runtime, so ``configure()`` replacing the runtime is seen
# by the next call.
_runtime_module: Any = None


def _load_runtime_module() -> Any:
    global _runtime_module
    from . import _runtime

    _runtime_module = _runtime
    return _runtime


class _StreamFinalizer:
    """One stream's record: the hooks, the iterator over the wrapped stream, and the finalize-once flag.

    ``on_end`` runs exactly once, whatever ends the stream; hook errors are logged, never raised. A plain slotted
    object on purpose: the proxies are ``wrapt`` proxies, whose own attributes cost several times more to read than
    a slot, so the per-item path reads this record once and everything else from it.
    """

    __slots__ = ("done", "iterator", "lock", "on_chunk", "on_end")

    def __init__(self, on_chunk: Callable[[Any], None], on_end: Callable[[BaseException | None], None]) -> None:
        self.on_chunk = on_chunk
        self.on_end = on_end
        self.iterator: Any = None  # created on the first item, from the wrapped stream's __iter__ / __aiter__
        self.done = False
        self.lock = threading.Lock()

    def chunk(self, item: Any) -> None:
        """Run ``on_chunk`` on one item; an error in it is reported, never raised."""
        try:
            self.on_chunk(item)
        except Exception as exc:
            report_internal_error(exc, "stream.on_chunk")

    def end(self, error: BaseException | None) -> None:
        """Run ``on_end`` unless it already ran; an error in it is reported, never raised."""
        with self.lock:
            if self.done:
                return
            self.done = True
        try:
            self.on_end(error)
        except Exception as exc:
            report_internal_error(exc, "stream.on_end")


class SyncStreamProxy(_Proxy):
    """Wraps a provider's sync stream: every item goes through ``on_chunk``; ``on_end`` runs exactly once.

    The proxy is transparent (``isinstance`` and attribute access reach the original stream); iteration, ``close()``
    and ``with`` are intercepted. Stream errors propagate unchanged after ``on_end(error)``.

    ``for item in proxy`` runs the generator ``__iter__`` returns (as the SDKs' ``Stream.__iter__`` does); explicit
    ``next(proxy)`` calls ``__next__``. Both pull from one iterator, so they can be mixed, and a loop broken out of
    resumes where it stopped when iterated again. Leaving a loop does not end the stream: exhaustion, an error,
    ``close()``, ``with`` exit or collection of the proxy (the generator keeps it alive while it exists) does.

    A subclass that overrides ``__iter__`` and ``__next__`` keeps the contract through the per-stream record
    ``self._self_final``: it pulls from ``record.iterator`` (``None`` until the first item; then ``iter()`` of the
    wrapped stream, shared by every path), passes items to ``record.chunk(item)`` (or to ``record.on_chunk`` inside
    its own error reporting), and calls ``record.end(error)`` when the iterator raises (``None`` for
    ``StopIteration``), never on ``GeneratorExit``. ``close()``, ``with`` exit and collection share that once-only
    ``end``.
    """

    __slots__ = ("_self_final",)

    def __init__(
        self, stream: Any, *, on_chunk: Callable[[Any], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        super().__init__(stream)
        self._self_final = _StreamFinalizer(on_chunk, on_end)

    def __iter__(self) -> Generator[Any, None, None]:
        # The hot path of ``for item in stream``: a generator, like the SDKs' own ``Stream.__iter__``, so each item
        # costs a generator resume instead of a Python-level ``__next__`` call through the proxy's type slot. The
        # frame holds ``self``: ``for chunk in client...create(stream=True)`` keeps no other reference to the proxy,
        # and it must not be collected (and finalized) while its items are still being read. No cycle: the proxy
        # never references its generators, so dropping both still finalizes at once.
        final = _sync_final(self)
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = iter(self.__wrapped__)
        on_chunk = final.on_chunk
        try:
            for item in iterator:
                try:
                    on_chunk(item)
                except Exception as exc:
                    report_internal_error(exc, "stream.on_chunk")
                yield item
        except GeneratorExit:
            raise  # the caller left the loop (break, or the generator was dropped): not the end of the stream
        except BaseException as exc:
            final.end(exc)
            raise
        final.end(None)

    def __next__(self) -> Any:
        # Explicit ``next(stream)``: the same shared iterator, hook and once-only end as ``__iter__``'s generator,
        # so the two can be mixed. The record is read through its slot descriptor (a proxy's own attribute lookup
        # costs several times more); try blocks cost nothing until something raises.
        final = _sync_final(self)
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = iter(self.__wrapped__)
        try:
            item = next(iterator)
        except StopIteration:
            final.end(None)
            raise
        except BaseException as exc:
            final.end(exc)
            raise
        try:
            final.on_chunk(item)
        except Exception as exc:
            report_internal_error(exc, "stream.on_chunk")
        return item

    def __enter__(self) -> SyncStreamProxy:
        enter = getattr(self.__wrapped__, "__enter__", None)
        if enter is not None:
            enter()
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__exit__", None)
            return exit_(et, ev, tb) if exit_ is not None else None
        finally:
            self._self_final.end(ev)

    def close(self) -> Any:
        """Close the underlying stream, then finalize with whatever usage already arrived."""
        try:
            close = getattr(self.__wrapped__, "close", None)
            return close() if close is not None else None
        finally:
            self._self_final.end(None)

    def __del__(self) -> None:
        # An abandoned stream (broken out of, never closed) is finalized when collected.
        self._self_final.end(None)


# Reads the record slot directly, skipping the proxy's attribute lookup (which first checks for names it forwards).
_sync_final = SyncStreamProxy.__dict__["_self_final"].__get__


class AsyncStreamProxy(_Proxy):
    """The async twin of :class:`SyncStreamProxy` (``async for``, ``async with``, ``await close()``).

    ``__aiter__`` returns the async generator ``_self_items()`` (the method a subclass overrides, with
    ``__anext__``), started so that a generator dropped mid-stream is closed at once, not later by the event loop.
    """

    __slots__ = ("_self_final",)

    def __init__(
        self, stream: Any, *, on_chunk: Callable[[Any], None], on_end: Callable[[BaseException | None], None]
    ) -> None:
        super().__init__(stream)
        self._self_final = _StreamFinalizer(on_chunk, on_end)

    def __aiter__(self) -> AsyncGenerator[Any, None]:
        return _closed_when_dropped(self._self_items())

    async def _self_items(self) -> AsyncGenerator[Any, None]:
        # As in SyncStreamProxy.__iter__: one async-generator resume per item instead of a coroutine per item.
        final = _async_final(self)
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = self.__wrapped__.__aiter__()
        on_chunk = final.on_chunk
        try:
            async for item in iterator:
                try:
                    on_chunk(item)
                except Exception as exc:
                    report_internal_error(exc, "stream.on_chunk")
                yield item
        except GeneratorExit:
            raise
        except BaseException as exc:
            final.end(exc)
            raise
        final.end(None)

    async def __anext__(self) -> Any:
        final = _async_final(self)  # as in SyncStreamProxy.__next__
        iterator = final.iterator
        if iterator is None:
            iterator = final.iterator = self.__wrapped__.__aiter__()
        try:
            item = await iterator.__anext__()
        except StopAsyncIteration:
            final.end(None)
            raise
        except BaseException as exc:
            final.end(exc)
            raise
        try:
            final.on_chunk(item)
        except Exception as exc:
            report_internal_error(exc, "stream.on_chunk")
        return item

    async def __aenter__(self) -> AsyncStreamProxy:
        enter = getattr(self.__wrapped__, "__aenter__", None)
        if enter is not None:
            await enter()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> Any:
        try:
            exit_ = getattr(self.__wrapped__, "__aexit__", None)
            return (await exit_(et, ev, tb)) if exit_ is not None else None
        finally:
            self._self_final.end(ev)

    async def close(self) -> Any:
        """Close the underlying stream, then finalize."""
        try:
            for name in ("close", "aclose"):
                close = getattr(self.__wrapped__, name, None)
                if close is not None:
                    return await close()
            return None
        finally:
            self._self_final.end(None)

    async def aclose(self) -> Any:
        """Alias of :meth:`close` for async-generator style callers."""
        return await self.close()

    def __del__(self) -> None:
        self._self_final.end(None)


_async_final = AsyncStreamProxy.__dict__["_self_final"].__get__
_get_asyncgen_hooks = sys.get_asyncgen_hooks
_set_asyncgen_hooks = sys.set_asyncgen_hooks


def _closed_when_dropped(items: AsyncGenerator[Any, None]) -> AsyncGenerator[Any, None]:
    """Start ``items`` (an async stream proxy's generator) outside the event loop's async-generator hooks.

    With the hooks (asyncio installs them), an async generator dropped mid-stream — ``break`` out of ``async for``
    — is not closed where it is dropped: the loop is asked to ``aclose()`` it in a task, and until that task runs
    the generator keeps its proxy alive, so an abandoned stream would be finalized a few loop iterations late, or
    never when the loop does not run again. These generators need no loop for their cleanup (nothing is awaited on
    ``GeneratorExit``), so they are closed synchronously when dropped, as a sync generator is. A generator takes
    the thread's hooks the first time its ``__anext__()`` is called, so that is done here with no hooks installed
    (the awaitable it returns is dropped unawaited, which runs nothing), then the hooks are put back.
    """
    firstiter, finalizer = _get_asyncgen_hooks()
    if firstiter is None and finalizer is None:
        return items
    _set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        _ = items.__anext__()  # takes the (absent) hooks; never awaited: runs nothing
    finally:
        _set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
    return items
