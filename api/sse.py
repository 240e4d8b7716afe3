"""Server-sent event responses, the same for every streaming route."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable

from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask
from starlette.types import Receive, Scope, Send

# No caching, and no buffering by a proxy in front (nginx honours X-Accel-Buffering): events must flow as made.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(events: AsyncIterator[bytes], background: BackgroundTask | None = None) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS, background=background)


class EventStreamResponse(Response):
    """An SSE response for the gateway's relays, where the per-request cost is the point: the same bytes as
    `sse_response`, written from the request's own task. StreamingResponse runs each stream in an anyio task
    group (a task for the body, cancel scopes, a task listening for the disconnect) and then its background task;
    here one plain asyncio task waits for the disconnect and cancels the writer, and ``after`` runs once the
    client has its last byte or has gone (its cleanup: usage, the upstream connection). That saved about 0.15 ms
    of CPU a stream, close to a tenth of what the gateway spends on one, on the 2-core reference machine."""

    media_type = "text/event-stream"

    def __init__(self, events: AsyncGenerator[bytes, None], after: Callable[[], Awaitable[None]], *,
                 media_type: str | None = None) -> None:
        """``media_type``: another body streamed the same way (an upstream's audio, passed on as it comes)."""
        self.events = events
        self.after = after
        self.status_code = 200
        self.background = None
        self.media_type = media_type or self.media_type
        self.init_headers(SSE_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        writer = asyncio.current_task()
        assert writer is not None
        done = False
        left = False

        async def watch() -> None:
            nonlocal left
            while (await receive())["type"] != "http.disconnect":
                pass
            if not done:  # the server also answers a disconnect once the response is complete
                left = True
                writer.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.events:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            done = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not left or writer.uncancel():  # not (only) the client leaving: the server's own cancellation
                raise
        finally:
            done = True
            watcher.cancel()
            try:
                await self.events.aclose()  # left at a yield if the client left during a write
            finally:
                await self.after()
