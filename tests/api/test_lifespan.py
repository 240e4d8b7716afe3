"""The app's services close in the reverse order of their start, and a startup that fails half-way closes only what
it had built."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from api.lifespan import open_services
from api.services.chat.streams import StreamHub
from api.services.gateway.gateway import Gateway
from api.services.gateway.runners import RunnerManager
from api.services.models.downloads import DownloadJobs
from api.services.usage.writer import UsageWriter
from api.settings import Settings
from api.tracing import Tracing
from api.ws.hub import WsHub
from engine.host import ModelHost

# Downloads stop first; streams next (their cancelled generations still record usage), then usage, then the
# model, the database, and tracing last (spans of everything closed before it still go out).
TEARDOWN = ["downloads", "ws_hub", "stream_hub", "runners", "gateway", "usage_writer", "model_host", "db_engine",
            "tracing"]


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The services' names, in the order they are closed."""
    order: list[str] = []
    for cls, method, name in ((DownloadJobs, "close", "downloads"), (WsHub, "close", "ws_hub"),
                              (StreamHub, "close", "stream_hub"), (RunnerManager, "close", "runners"),
                              (Gateway, "close", "gateway"), (UsageWriter, "close", "usage_writer"),
                              (ModelHost, "close", "model_host"), (AsyncEngine, "dispose", "db_engine"),
                              (Tracing, "close", "tracing")):
        monkeypatch.setattr(cls, method, _recording(getattr(cls, method), name, order))
    return order


def _recording(close: Callable[..., Awaitable[None]], name: str, order: list[str]) -> Callable[..., Awaitable[None]]:
    async def recorded(self: object, *args: object) -> None:
        order.append(name)
        await close(self, *args)
    return recorded


def tracing() -> Tracing:
    provider = TracerProvider()  # no exporter: nothing leaves the test
    return Tracing(provider.get_tracer("test"), provider)


async def test_services_close_in_the_reverse_order_of_their_start(settings: Settings, closed: list[str]) -> None:
    async with open_services(settings, tracing=tracing()) as services:
        await services.model_loading
        assert closed == []
    assert closed == TEARDOWN


async def test_a_startup_that_fails_half_way_closes_what_it_built(
        settings: Settings, closed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    async def unreachable(self: Gateway) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr(Gateway, "reload", unreachable)
    with pytest.raises(ConnectionError):
        async with open_services(settings, tracing=tracing()):
            pytest.fail("the services must not be handed out")
    assert closed == ["gateway", "usage_writer", "model_host", "db_engine", "tracing"]
