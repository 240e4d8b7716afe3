"""The WebSocket channel, ``/v1/ws`` (protocol: docs/websocket.md); all of it lives in ``api/services``."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket

from api.lifespan import services_of
from api.ws.channel import Channel

router = APIRouter(tags=["websocket"])


@router.websocket("/v1/ws")
async def websocket_channel(websocket: WebSocket) -> None:
    await Channel(websocket, services_of(websocket.app), websocket.app.state.settings).run()
