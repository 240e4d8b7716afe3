"""Stopping on SIGTERM without cutting a response in half.

uvicorn waits up to its grace period for the responses in flight, then cancels them: a stream still generating
(a long answer on a slow CPU) would end mid-body, with no error frame, no usage row and nothing stored for a resume.
So shortly before the grace period runs out, the engine's work is ended instead: every stream still open gets its
``engine_stopped`` error frame, its usage and its stored events, and the connections close by themselves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from uvicorn.main import STARTUP_FAILURE

from api.lifespan import services_if_started

log = logging.getLogger(__name__)

# Past this share of the grace period, the engine's work is ended, leaving the streams time to write their ends.
ENDS_WORK_AT = 2 / 3


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, grace_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._ends_work_after_s = grace_s * ENDS_WORK_AT

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        ending = asyncio.create_task(self._end_work_later())
        try:
            await super().shutdown(sockets)
        finally:
            ending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ending

    async def _end_work_later(self) -> None:
        await asyncio.sleep(self._ends_work_after_s)
        services = services_if_started(self._app)
        engine = services.model_host.local if services is not None else None
        if engine is not None:
            ended = engine.end_all("the server is shutting down; retry on another replica or shortly")
            log.warning("shutting down: ended %d generation(s) still running after %.0f s", ended,
                        self._ends_work_after_s)


def serve(app: Starlette, *, host: str, port: int, grace_s: float) -> None:
    """Run ``app`` as ``uvicorn.run`` would (exit status 3 when it could not start), stopping gracefully."""
    config = uvicorn.Config(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=math.ceil(grace_s))
    server = GracefulServer(config, app, grace_s)
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
