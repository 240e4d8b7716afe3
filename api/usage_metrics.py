"""Usage-writer counters for /metrics, read at scrape time: rows the database refused and rows waiting."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from api.lifespan import AppServices


class UsageCollector(Collector):
    def __init__(self, services: Callable[[], AppServices | None]) -> None:
        self.services = services  # None until the app's lifespan has built them

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        services = self.services()
        writer = services.usage_writer if services is not None else None
        if writer is None:
            return
        yield CounterMetricFamily("llmws_usage_rows_set_aside", "usage rows the database refused (a data error), "
                                  "logged and kept aside instead of written", value=writer.set_aside_total)
        yield GaugeMetricFamily("llmws_usage_rows_pending", "usage rows recorded and not written yet",
                                value=writer.pending_count)
