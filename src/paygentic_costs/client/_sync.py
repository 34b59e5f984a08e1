"""The synchronous management client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from types import TracebackType
from typing import Any

import httpx

from ._base import DEFAULT_BASE_URL, UNSET, Unset, When, _BaseClient, _Call
from ._models import Cost, CostList, CostReport, CostSummary

__all__ = ["Client"]


class Client(_BaseClient[httpx.Client]):
    """Manage cost metrics and read cost summaries and reports (synchronous).

    Every method raises :class:`~paygentic_costs.client.APIError` subclasses for error answers
    (``NotFound``, ``AuthError``, ``ValidationError``, ``RateLimited``) and ``httpx.TransportError`` when the
    server cannot be reached. Requests are not retried: a ``RateLimited`` error carries the server's ``retry_after``.

    Args:
        api_key: Paygentic API key (sent as ``Authorization: Bearer``; never shown in reprs, logs or errors).
        base_url: API root; a path prefix is kept. Default ``https://api.paygentic.io``.
        timeout: Seconds per request, when the client creates its own ``httpx.Client``.
        http_client: An ``httpx.Client`` to use (not closed by this client).
        transport: An httpx transport for the client's own ``httpx.Client`` (e.g. ``httpx.MockTransport``).

    Example:
        >>> from paygentic_costs.server import LocalServer
        >>> with LocalServer() as server, Client("sk_test", base_url=server.url) as client:
        ...     cost = client.create_cost("LLM", event_type="cost.ai.inference", aggregation="SUM",
        ...                               value_property="$.amount", unit_cost=1, currency="USD", product_id="prod_1")
        ...     client.get_cost(cost.id).name
        'LLM'
    """

    def __init__(
        self,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout: float = 10.0,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        owns = http_client is None
        http = http_client if http_client is not None else httpx.Client(timeout=timeout, transport=transport)
        super().__init__(api_key, base_url=base_url, http_client=http, owns_client=owns)

    def _send(self, call: _Call) -> Any:
        return self._parse(self._http.send(self._request(call)))

    def close(self) -> None:
        """Close the underlying ``httpx.Client`` if this client created it."""
        if self._owns_client:
            self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def create_cost(
        self,
        name: str,
        *,
        event_type: str,
        aggregation: str,
        unit_cost: Decimal | int | str,
        currency: str,
        product_id: str,
        value_property: str | None = None,
        unit: str | None = None,
        group_by: Mapping[str, str] | None = None,
        merchant_id: str | None = None,
    ) -> Cost:
        """Create a metered cost (``POST /v0/costs``).

        Args:
            name: Display name.
            event_type: Event ``type`` the cost measures.
            aggregation: ``SUM``, ``COUNT``, ``AVG``, ``MIN``, ``MAX``, ``UNIQUE_COUNT`` or ``LATEST``.
            unit_cost: Cost per unit of quantity, sent with exactly its digits.
            currency: ISO 4217 code.
            product_id: The product the cost belongs to.
            value_property: JSONPath (``$.amount``) of the measured value; needed by all but COUNT.
            unit: Unit label.
            group_by: Dimension name → JSONPath into the event data.
            merchant_id: Organisation (defaults to the API key's).

        Returns:
            The created cost.

        Raises:
            ValidationError: The API rejected the definition.
        """
        return Cost.from_json(
            self._send(
                self._create_cost(
                    name,
                    event_type=event_type,
                    aggregation=aggregation,
                    unit_cost=unit_cost,
                    currency=currency,
                    product_id=product_id,
                    value_property=value_property,
                    unit=unit,
                    group_by=group_by,
                    merchant_id=merchant_id,
                )
            )
        )

    def list_costs(
        self, *, product_id: str | None = None, limit: int = 10, offset: int = 0, merchant_id: str | None = None
    ) -> CostList:
        """List active costs (``GET /v0/costs``), one page.

        Args:
            product_id: Only costs of this product.
            limit: Page size.
            offset: Costs to skip.
            merchant_id: Organisation (defaults to the API key's).

        Returns:
            The page, with the total count.
        """
        return CostList.from_json(self._send(self._list_costs(product_id, limit, offset, merchant_id)))

    def get_cost(self, cost_id: str) -> Cost:
        """Get one cost (``GET /v0/costs/{id}``).

        Raises:
            NotFound: No such active cost.
        """
        return Cost.from_json(self._send(_Call("GET", f"/v0/costs/{cost_id}", [])))

    def update_cost(
        self,
        cost_id: str,
        *,
        name: str | Unset = UNSET,
        unit_cost: Decimal | int | str | Unset = UNSET,
        currency: str | Unset = UNSET,
        unit: str | Unset | None = UNSET,
        aggregation: str | Unset | None = UNSET,
        event_type: str | Unset | None = UNSET,
        value_property: str | Unset | None = UNSET,
        group_by: Mapping[str, str] | Unset | None = UNSET,
    ) -> Cost:
        """Change a cost (``PATCH /v0/costs/{id}``): omitted fields stay, ``None`` clears a nullable field.

        Returns:
            The updated cost.

        Raises:
            NotFound: No such active cost.
            ValidationError: The change was rejected.
        """
        fields = {
            "name": name,
            "unitCost": unit_cost,
            "currency": currency,
            "unit": unit,
            "aggregation": aggregation,
            "eventType": event_type,
            "valueProperty": value_property,
            "groupBy": group_by,
        }
        return Cost.from_json(self._send(self._update_cost(cost_id, fields)))

    def delete_cost(self, cost_id: str) -> None:
        """Soft-delete a cost (``DELETE /v0/costs/{id}``); its history is kept.

        Raises:
            NotFound: No such active cost.
        """
        self._send(_Call("DELETE", f"/v0/costs/{cost_id}", []))

    def get_cost_summary(
        self,
        cost_id: str,
        start: When,
        end: When,
        *,
        subject: str | None = None,
        group_by: Sequence[str] | str | None = None,
        window: str | None = None,
        filter_group_by: Mapping[str, str] | None = None,
    ) -> CostSummary:
        """Quantity and cost of one cost over ``start <= t < end`` (``GET /v0/costs/{id}/summary``).

        Args:
            cost_id: The cost.
            start: Inclusive start (naive datetimes are UTC).
            end: Exclusive end.
            subject: Only this customer.
            group_by: Dimension names to break down by.
            window: ``MINUTE``, ``HOUR`` or ``DAY`` time series.
            filter_group_by: Only events with these dimension values.

        Returns:
            The summary, money and quantities as ``Decimal``.

        Raises:
            NotFound: No such active cost.
            ValidationError: Bad period, dimension or filter.
        """
        call = self._summary(cost_id, start, end, subject, group_by, window, filter_group_by)
        return CostSummary.from_json(self._send(call))

    def get_cost_report(
        self,
        start: When,
        end: When,
        *,
        group_by: str = "cost",
        cost_ids: Sequence[str] | None = None,
        subject: str | None = None,
        filter_group_by: Mapping[str, str] | None = None,
        top_n: int = 9,
        compare_prior_period: bool = False,
        exclude_empty: bool = False,
        window_size: str | None = None,
        sort: str = "totalCost",
        sort_dir: str = "desc",
        offset: int = 0,
        limit: int = 25,
        currency: str | None = None,
        merchant_id: str | None = None,
    ) -> CostReport:
        """Cost across costs, customers or one cost's dimension (``GET /v0/costs/report``).

        Args:
            start: Inclusive start.
            end: Exclusive end.
            group_by: ``cost``, ``customer`` or a dimension (a dimension needs exactly one of ``cost_ids``).
            cost_ids: Only these costs.
            subject: Only this customer.
            filter_group_by: Only events with these dimension values.
            top_n: Groups kept before the rest folds into ``__other__``.
            compare_prior_period: Add the previous period of equal length to each group.
            exclude_empty: Leave out groups with neither cost nor usage.
            window_size: ``HOUR``, ``DAY`` or ``MONTH`` time series.
            sort: ``totalCost`` or ``totalQuantity``.
            sort_dir: ``desc`` or ``asc``.
            offset: Groups to skip.
            limit: Groups to return.
            currency: Only costs in this currency.
            merchant_id: Organisation (defaults to the API key's).

        Returns:
            The report.

        Raises:
            ValidationError: Bad period, grouping or filter.
        """
        call = self._report(
            start,
            end,
            group_by=group_by,
            cost_ids=cost_ids,
            subject=subject,
            filter_group_by=filter_group_by,
            top_n=top_n,
            compare_prior_period=compare_prior_period,
            exclude_empty=exclude_empty,
            window_size=window_size,
            sort=sort,
            sort_dir=sort_dir,
            offset=offset,
            limit=limit,
            currency=currency,
            merchant_id=merchant_id,
        )
        return CostReport.from_json(self._send(call))
