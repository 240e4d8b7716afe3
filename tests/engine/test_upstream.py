"""An upstream model behind the engine interface, against the fake OpenAI server: its events, and an abort that
really stops the upstream."""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.fake_openai import WORDS, FakeUpstream
from engine.requests import FinishEvent, GenerationRequest, SamplingParams, StartEvent, TokenEvent
from engine.upstream import Upstream, UpstreamConfig, UpstreamModel


def request() -> GenerationRequest:
    return GenerationRequest(messages=[{"role": "user", "content": "hi"}], sampling=SamplingParams(max_tokens=8))


async def test_an_upstream_answer_becomes_engine_events(upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient() as http:
        model = UpstreamModel(Upstream(UpstreamConfig("fake", upstream.base_url), http), "fake-fast")
        events = [event async for event in model.generate(request())]
    assert isinstance(events[0], StartEvent)
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == "".join(WORDS)
    assert isinstance(events[-1], FinishEvent) and events[-1].usage.completion_tokens == len(WORDS)


async def test_abort_closes_the_upstream_stream_and_ends_the_events(upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient() as http:
        model = UpstreamModel(Upstream(UpstreamConfig("fake", upstream.base_url), http), "fake-slow")
        generation = request()
        before = len(upstream.disconnects)
        tokens = 0
        async with asyncio.timeout(10):  # the slow model streams for a minute unless stopped
            async for event in model.generate(generation):
                tokens += isinstance(event, TokenEvent)
                if tokens == 3:
                    aborted_at = time.monotonic()
                    model.abort(generation.request_id)
        assert model.stats().running == 0
    while len(upstream.disconnects) == before and time.monotonic() - aborted_at < 3:  # noqa: ASYNC110 (another thread records it)
        await asyncio.sleep(0.01)
    assert len(upstream.disconnects) > before and upstream.disconnects[-1] - aborted_at < 1.0
