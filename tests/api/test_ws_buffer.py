"""The WebSocket session buffer at rest: sealed (no plaintext in the table), bound to its place, trimmed on ack,
expired when idle, and owned by its user."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from api.services.accounts.users import create_user
from api.services.errors import NotFound
from api.services.sealing import Sealer, Unsealable
from api.ws import buffer as ws_buffer
from db.models import WsEvent, WsSession
from db.types import utcnow

SECRET = "a-test-secret-key-that-is-long-enough-0123456789"


def test_a_sealed_value_opens_only_with_its_key_and_context() -> None:
    sealer = Sealer(SECRET, "ws-buffer")
    sealed = sealer.seal(b"the capital is Paris", b"s:1")
    assert b"Paris" not in sealed
    assert sealer.open(sealed, b"s:1") == b"the capital is Paris"
    assert sealer.seal(b"same", b"c") != sealer.seal(b"same", b"c")  # a fresh nonce each time
    for wrong in (lambda: sealer.open(sealed, b"s:2"), lambda: Sealer(SECRET, "other").open(sealed, b"s:1"),
                  lambda: Sealer(SECRET + "x", "ws-buffer").open(sealed, b"s:1"),
                  lambda: sealer.open(sealed[:-1] + bytes([sealed[-1] ^ 1]), b"s:1"),
                  lambda: sealer.open(b"short", b"s:1")):
        with pytest.raises(Unsealable):
            wrong()


async def test_buffer_round_trip_tamper_trim_and_expiry(db_session: AsyncSession) -> None:
    sealer = Sealer(SECRET, ws_buffer.SEALING_PURPOSE)
    owner = await create_user(db_session, "wsowner", "ws-owner-password-1")
    stranger = await create_user(db_session, "wsstranger", "ws-stranger-password-1")
    session, resumed = await ws_buffer.open_session(db_session, owner.id, None)
    assert not resumed
    events = [ws_buffer.BufferedEvent(seq, {"type": "token", "seq": seq, "text": f"Paris-{seq}"})
              for seq in range(1, 6)]
    await ws_buffer.store(db_session, sealer, session.id, events)
    await db_session.flush()

    stored = (await db_session.execute(select(WsEvent.payload))).scalars().all()
    assert len(stored) == 5 and not any(b"Paris" in payload for payload in stored)
    assert await ws_buffer.events_after(db_session, sealer, session.id, 2) == events[2:]
    assert (await db_session.get(WsSession, session.id)).last_seq == 5  # type: ignore[union-attr]

    # A tampered entry, and one moved to another position, become error events in place; the rest still read.
    await db_session.execute(update(WsEvent).where(WsEvent.seq == 3).values(payload=b"\x00" * 40))
    moved = (await db_session.execute(select(WsEvent.payload).where(WsEvent.seq == 5))).scalar_one()
    await db_session.execute(update(WsEvent).where(WsEvent.seq == 4).values(payload=moved))
    replay = await ws_buffer.events_after(db_session, sealer, session.id, 0)
    assert [item.event["type"] for item in replay] == ["token", "token", "error", "error", "token"]
    assert replay[2].event["code"] == "buffer_entry_unreadable" and replay[2].seq == 3

    assert await ws_buffer.trim(db_session, session.id, 3) == 3
    assert [item.seq for item in await ws_buffer.events_after(db_session, sealer, session.id, 0)] == [4, 5]

    again, resumed = await ws_buffer.open_session(db_session, owner.id, session.id)
    assert resumed and again.id == session.id
    with pytest.raises(NotFound):
        await ws_buffer.open_session(db_session, stranger.id, session.id)
    with pytest.raises(NotFound):
        await ws_buffer.open_session(db_session, owner.id, uuid.uuid4())

    await db_session.execute(update(WsSession).values(last_active_at=utcnow() - timedelta(days=2)))
    assert await ws_buffer.expire_idle(db_session, utcnow() - timedelta(days=1)) == 1
    assert (await db_session.execute(select(WsEvent))).first() is None
