"""The WebSocket hub's memory: a session nobody uses any more leaves the process (the database keeps it), so a
server taking many short sessions does not grow without bound, and a session taken up again resumes from storage."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy.ext.asyncio import async_sessionmaker

from api.services.accounts.users import create_user
from api.services.sealing import Sealer
from api.ws import buffer as ws_buffer
from api.ws.hub import WsHub
from db.session import create_engine

SECRET = "a-test-secret-key-that-is-long-enough-0123456789"


async def test_a_session_left_alone_leaves_memory_and_resumes_from_the_database(database_url: str) -> None:
    engine = create_engine(database_url)
    sessionmaker = async_sessionmaker(engine, expire_on_commit=False)
    async with sessionmaker() as db:
        user = await create_user(db, "wsidle", "ws-idle-password-1")
        row, _ = await ws_buffer.open_session(db, user.id, None)
        await db.commit()
    hub = WsHub(sessionmaker, Sealer(SECRET, ws_buffer.SEALING_PURPOSE), persist_interval_s=0.02,
                forget_after_s=0.2)
    hub.start()
    try:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        live = hub.live(row.id, user.id, 0, {}, None)
        await hub.attach(live, send, 0)
        await live.emit({"type": "start", "request_id": "r"})
        await live.emit({"type": "done", "request_id": "r", "text": ""})
        await asyncio.sleep(0.5)
        assert row.id in hub.sessions  # a client is attached: it stays
        hub.detach(live, send)
        deadline = time.monotonic() + 5
        while row.id in hub.sessions:
            assert time.monotonic() < deadline, "an unused session stayed in memory"
            await asyncio.sleep(0.02)
        assert live.worker is not None and live.worker.done()

        again = hub.live(row.id, user.id, 2, {}, None)  # what `hello` does with the stored last_seq
        resumed: list[dict[str, Any]] = []

        async def send_again(message: dict[str, Any]) -> None:
            resumed.append(message)

        await hub.attach(again, send_again, 0)
        assert resumed == sent and [event["seq"] for event in resumed] == [1, 2]
        await again.emit({"type": "start", "request_id": "s"})
        assert resumed[-1]["seq"] == 3
    finally:
        await hub.close()
        await engine.dispose()
