"""Usage-writer counters for /metrics, read at scrape time: rows the database refused and rows waiting."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from starlette.datastructures import State


class UsageCollector(Collector):
    def __init__(self, state: State) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        writer = getattr(self.state, "usage_writer", None)
        if writer is None:
            return
        yield CounterMetricFamily("llmws_usage_rows_set_aside", "usage rows the database refused (a data error), "
                                  "logged and kept aside instead of written", value=writer.set_aside_total)
        yield GaugeMetricFamily("llmws_usage_rows_pending", "usage rows recorded and not written yet",
                                value=writer.pending_count)
