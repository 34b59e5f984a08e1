"""Attribution and idempotency keys across threads, executors, asyncio tasks and decorators."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

import paygentic_costs as pc
from paygentic_costs.export import InMemoryExporter
from paygentic_costs.testing import capture


@pytest.fixture(autouse=True)
def _configured() -> None:
    pc.configure(exporter=InMemoryExporter(), source="test")


def test_keys_follow_the_job_convention() -> None:
    with capture() as costs, pc.job("job_xyz789", customer="cus_abc123"):
        pc.record("cost.ai.inference", amount="0.0042")
        pc.record("cost.ai.inference", amount="0.0001")
        pc.record("cost.enrichment", amount="0.0010")
        pc.record("cost.ai.inference", amount="0.0003")
    assert [e.idempotency_key for e in costs.events] == [
        "job_xyz789-cost.ai.inference",
        "job_xyz789-cost.ai.inference-2",
        "job_xyz789-cost.enrichment",
        "job_xyz789-cost.ai.inference-3",
    ]
    assert {e.subject for e in costs.events} == {"cus_abc123"}


def test_rerunning_a_job_regenerates_the_same_keys() -> None:
    def run() -> list[str]:
        with capture() as costs, pc.job("job_1", customer="cus_1"):
            pc.record("cost.x", amount=1)
            pc.record("cost.x", amount=1)
        return [e.idempotency_key for e in costs.events]

    assert run() == run() == ["job_1-cost.x", "job_1-cost.x-2"]


def test_operation_id_replaces_the_counter_and_keys_outside_a_job() -> None:
    with capture() as costs:
        with pc.job("J", customer="c"):
            pc.record("cost.x", amount=1, operation_id="page-7")
        with pc.customer("c"):
            pc.record("cost.x", amount=1, operation_id="op-1")
            pc.record("cost.x", amount=1, request_id="req_abc")
            pc.record("cost.x", amount=1)
    keys = [e.idempotency_key for e in costs.events]
    assert keys[:3] == ["J-cost.x-page-7", "op-1-cost.x", "req_abc-cost.x"]
    assert len(keys[3]) == 36 and keys[3] not in keys[:3]  # a random UUID


def test_long_job_ids_are_hashed_not_truncated() -> None:
    long_a, long_b = "a" * 150 + "1", "a" * 150 + "2"
    with capture() as costs:
        with pc.job(long_a, customer="c"):
            pc.record("cost.x", amount=1)
        with pc.job(long_b, customer="c"):
            pc.record("cost.x", amount=1)
    first, second = (e.idempotency_key for e in costs.events)
    assert first != second and len(first) < 100 and len(second) < 100


def test_counters_are_shared_safely_across_threads() -> None:
    with capture() as costs, pc.job("J", customer="c"):
        work = pc.wrap(lambda: [pc.record("cost.x", amount=1) for _ in range(200)])
        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    keys = [e.idempotency_key for e in costs.events]
    assert len(keys) == 1600 and len(set(keys)) == 1600
    assert "J-cost.x" in keys and "J-cost.x-1600" in keys


def test_plain_threads_do_not_inherit_attribution_without_wrap() -> None:
    seen: list[str | None] = []
    with pc.customer("cus_1"):
        t = threading.Thread(target=lambda: seen.append(pc._context.current().customer))
        t.start()
        t.join()
        t2 = threading.Thread(target=pc.wrap(lambda: seen.append(pc._context.current().customer)))
        t2.start()
        t2.join()
    assert seen == [None, "cus_1"]


def test_wrap_carries_attribution_into_an_executor() -> None:
    with capture() as costs, pc.job("J", customer="cus_7"), ThreadPoolExecutor(4) as pool:
        list(pool.map(pc.wrap(lambda i: pc.record("cost.x", amount=i)), range(10)))
    assert len(costs.events) == 10 and {e.subject for e in costs.events} == {"cus_7"}
    assert costs.total() == Decimal(45)


def test_propagate_patches_executor_and_threads() -> None:
    pc.configure(exporter=InMemoryExporter(), source="test", propagate=True)
    with capture() as costs, pc.customer("cus_p"):
        with ThreadPoolExecutor(2) as pool:
            pool.submit(pc.record, "cost.x", amount=1).result()
        t = threading.Thread(target=pc.record, args=("cost.x",), kwargs={"amount": 2})
        t.start()
        t.join()
    assert [e.subject for e in costs.events] == ["cus_p", "cus_p"]


async def test_asyncio_tasks_inherit_attribution_and_share_the_job_counter() -> None:
    async def one(i: int) -> None:
        await asyncio.sleep(0)
        pc.record("cost.x", amount=i)

    with capture() as costs:
        async with pc.job("AJ", customer="cus_a"):
            await asyncio.gather(*(one(i) for i in range(50)))
    assert {e.subject for e in costs.events} == {"cus_a"}
    assert len({e.idempotency_key for e in costs.events}) == 50


async def test_decorators_work_on_async_functions_for_the_whole_await() -> None:
    @pc.job(lambda order: f"order-{order}", customer="cus_d")
    async def handle(order: int) -> str:
        await asyncio.sleep(0.001)
        pc.record("cost.x", amount="0.5")
        return "ok"

    with capture() as costs:
        assert await handle(1) == "ok"
        assert await handle(2) == "ok"
    assert [e.idempotency_key for e in costs.events] == ["order-1-cost.x", "order-2-cost.x"]


def test_decorators_preserve_sync_functions_and_generators() -> None:
    @pc.customer("cus_g")
    def gen() -> object:
        yield pc._context.current().customer
        yield pc._context.current().customer

    @pc.job("J2", customer="cus_s")
    def sync(x: int) -> int:
        """Docstring kept."""
        return x * 2

    assert list(gen()) == ["cus_g", "cus_g"]
    assert sync(21) == 42 and sync.__doc__ == "Docstring kept." and sync.__name__ == "sync"
    assert pc._context.current().customer is None


def test_user_exceptions_pass_through_untouched() -> None:
    boom = ValueError("mine")

    @pc.job("J", customer="c")
    def fails() -> None:
        raise boom

    with pytest.raises(ValueError) as info:
        fails()
    assert info.value is boom and info.value.__cause__ is None and info.value.__context__ is None


def test_nested_customer_and_dimensions() -> None:
    with capture() as costs, pc.job("J", customer="cus_outer", region="eu"):
        with pc.customer(external="acme", team="search"):
            pc.record("cost.x", amount=1)
        pc.record("cost.x", amount=1)
    inner, outer = costs.events
    assert inner.subject is None and inner.external_subject == "acme"
    assert inner.data["region"] == "eu" and inner.data["team"] == "search"
    assert outer.subject == "cus_outer" and "team" not in outer.data


def test_bad_ids_are_rejected_clearly() -> None:
    with pytest.raises(pc.InvalidCostError, match="job id"):
        pc.job("")
    with pytest.raises(pc.InvalidCostError, match="control characters"):
        pc.customer("cus\n1")
    with pytest.raises(pc.InvalidCostError, match="customer id or external"):
        pc.customer()


def test_the_fast_otel_context_read_is_otels_own_and_falls_back_to_the_public_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from opentelemetry import context as otel_context

    from paygentic_costs import _context

    read = _context._otel_context_reader()
    token = otel_context.attach(otel_context.set_value("k", "v"))
    try:
        assert read() is otel_context.get_current() and read().get("k") == "v"
    finally:
        otel_context.detach(token)

    class OtherRuntime:  # e.g. a custom OTEL_PYTHON_CONTEXT: only the public function knows how to read it
        pass

    monkeypatch.setattr(otel_context, "_RUNTIME_CONTEXT", OtherRuntime())
    assert _context._otel_context_reader() is otel_context.get_current
