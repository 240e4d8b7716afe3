"""Engine gauges for /metrics, read from the model host at scrape time (no bookkeeping on the hot path)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from api.lifespan import AppServices


class EngineCollector(Collector):
    def __init__(self, services: Callable[[], AppServices | None]) -> None:
        self.services = services  # None until the app's lifespan has built them

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        services = self.services()
        host = services.model_host if services is not None else None
        local = host.local if host is not None else None
        yield GaugeMetricFamily("llmws_engine_model_loaded", "1 when a local model is being served",
                                value=1 if local is not None else 0)
        if local is None:
            return
        stats = local.stats()
        for name, help_text, value in (
            ("queue_depth", "sequences waiting for a batch slot", stats.queue_depth),
            ("running", "sequences being decoded", stats.running),
            ("batch_size", "rows in the running batch", stats.batch_size),
            ("tokens_per_second", "tokens generated per second over the last 10 s", stats.tokens_per_s),
            ("kv_cache_bytes", "bytes held by the running batch's KV cache", stats.kv_cache_bytes),
            ("peak_kv_cache_bytes", "the most the batch's KV cache has held", stats.peak_kv_cache_bytes),
            ("kv_budget_bytes", "what the batch's KV cache may hold (0: no cap)", stats.kv_budget_bytes or 0),
            ("max_context_tokens", "longest request the memory budget allows", local.max_context),
            ("prefix_cache_bytes", "bytes of keys and values kept for reuse by prompts with the same start",
             stats.prefix_cache_bytes),
        ):
            yield GaugeMetricFamily(f"llmws_engine_{name}", help_text, value=value)
        yield CounterMetricFamily("llmws_engine_prefix_cached_tokens", "prompt tokens reused from the prefix cache "
                                  "instead of computed", value=stats.prefix_cached_tokens)
