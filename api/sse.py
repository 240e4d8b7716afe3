"""Server-sent event responses, the same for every streaming route."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask

# No caching, and no buffering by a proxy in front (nginx honours X-Accel-Buffering): events must flow as made.
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def sse_response(events: AsyncIterator[bytes], background: BackgroundTask | None = None) -> StreamingResponse:
    return StreamingResponse(events, media_type="text/event-stream", headers=SSE_HEADERS, background=background)
