"""The upstream relay on its own, against the fake upstream in this process: a stream read to its end gives its
connection back to the pool (a new TCP connect per stream was most of what the gateway's streams cost over a
bare pass-through), and its usage is recorded once, from the upstream's report."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from api.openai import passthrough
from api.services.gateway.gateway import Deployment, ProviderState
from api.services.usage.metering import Meter
from api.services.usage.writer import UsageRecord
from bench.fake_openai import WORDS, FakeUpstream, serve_in_thread
from engine.errors import UpstreamError
from engine.upstream import Upstream, UpstreamConfig


class SeenConnections:
    """The fake upstream's app, noting the client address (one per TCP connection) of each request."""

    def __init__(self) -> None:
        self.fake = FakeUpstream()
        self.clients: list[tuple[str, int]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            self.clients.append(scope["client"])
        await self.fake.app(scope, receive, send)


class Records:
    def __init__(self) -> None:
        self.rows: list[UsageRecord] = []

    def record(self, record: UsageRecord) -> None:
        self.rows.append(record)


@pytest.fixture(scope="module")
def seen() -> Iterator[tuple[SeenConnections, str]]:
    app = SeenConnections()
    server, root = serve_in_thread(app)
    yield app, f"{root}/v1"
    server.should_exit = True


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


async def relay_once(http: httpx.AsyncClient, base_url: str, records: Records) -> bytes:
    provider = ProviderState(1, "fake", "openai", Upstream(UpstreamConfig("fake", base_url), http), True)
    deployment = Deployment(1, provider, "fake-fast", None, {}, 0)
    body: dict[str, Any] = {"model": "alias", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    opened = await passthrough.open_stream(deployment, "/chat/completions", body)
    meter = Meter(records, "req", None, None, "alias", "fake")  # type: ignore[arg-type]
    relay = passthrough.Relay(meter, "alias", "hi", None, lambda: None, "fake-fast")
    chunks = [chunk async for chunk in passthrough.relay_stream(opened, relay, include_usage=False)]
    await passthrough.settle(opened, relay)
    return b"".join(chunks)


async def test_streams_read_to_their_end_reuse_one_upstream_connection(
    seen: tuple[SeenConnections, str], http: httpx.AsyncClient
) -> None:
    app, base_url = seen
    records = Records()
    before = len(app.clients)
    bodies = [await relay_once(http, base_url, records) for _ in range(3)]
    assert len(set(app.clients[before:])) == 1, "each stream opened a new connection to the upstream"
    for body in bodies:
        events = [line for line in body.decode().split("\n\n") if line]
        assert events[-1] == "data: [DONE]" and sum(e == "data: [DONE]" for e in events) == 1
        assert '"model":"alias"' in events[1] and "fake-fast" not in body.decode()
        assert '"usage"' not in body.decode()  # asked for our accounting, not by this client
    assert [(r.status, r.count_source, r.completion_tokens) for r in records.rows] == [
        ("ok", "upstream", len(WORDS))] * 3


@pytest.mark.parametrize("data", ['{"choices": [1]}', '{"choices": [{"delta": "text"}]}', '{"choices": "x"}'])
def test_an_event_of_the_wrong_shape_is_an_upstream_error_not_a_crash(data: str) -> None:
    # After the 200 an exception other than UpstreamError would cut the stream with no error frame.
    meter = Meter(Records(), "req", None, None, "alias", "fake")  # type: ignore[arg-type]
    relay = passthrough.Relay(meter, "alias", "hi", None, lambda: None, "fake-fast")
    with pytest.raises(UpstreamError, match="wrong shape"):
        relay.forward(data, include_usage=False)
