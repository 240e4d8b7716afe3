"""Gateway gauges for /metrics, read at scrape time: each provider's health and the requests in flight per
deployment."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from api.lifespan import AppServices


class GatewayCollector(Collector):
    def __init__(self, services: Callable[[], AppServices | None]) -> None:
        self.services = services  # None until the app's lifespan has built them

    def collect(self) -> Iterator[GaugeMetricFamily]:
        services = self.services()
        gateway = services.gateway if services is not None else None
        if gateway is None:
            return
        up = GaugeMetricFamily("llmws_provider_up", "1 healthy, 0 unhealthy, -1 not checked yet (active providers)",
                               labels=["provider"])
        for provider in gateway.providers.values():
            if provider.is_active:
                up.add_metric([provider.name], -1 if provider.healthy is None else int(provider.healthy))
        yield up
        in_flight = GaugeMetricFamily("llmws_gateway_in_flight", "requests being served, per alias and deployment",
                                      labels=["model", "backend"])
        for alias in gateway.aliases.values():
            for deployment in alias.deployments:
                in_flight.add_metric([alias.name, deployment.backend], gateway.in_flight.get(deployment.id, 0))
        yield in_flight
