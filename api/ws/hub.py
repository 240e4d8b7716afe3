"""WebSocket sessions while they are live in this process: numbered events, their sealed buffer in the database,
the attached socket (if any), and a FIFO of inference jobs run one after another.

Every event a session produces gets the next sequence number and goes into the session's memory and, every
``persist_interval_s``, into the database (sealed); then it is sent to the attached client, if one is attached. A
client that drops leaves its session running; one that comes back (here or on another replica) is sent everything
after the sequence number it last saw, then the live rest, in order, without duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.sealing import Sealer
from api.ws import buffer as ws_buffer
from api.ws.buffer import BufferedEvent
from db.models import WsEvent, WsSession
from db.types import utcnow

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Job = Callable[["LiveSession"], Awaitable[None]]
RECENT_EVENTS = 5000  # events kept in memory per session beyond what the database holds anyway
GENERATION_OPEN = {"start", "token"}  # a session whose last event is one of these is generating somewhere
GENERATION_END = {"done", "error"}
CLOSE_GRACE_S = 5.0  # at shutdown, how long aborted generations get to write their end
REMOTE_POLL_S = 0.2
CATCH_UP_S = 2.0  # how long a hello waits for events its client saw on another replica to reach the database
REMOTE_QUIET_S = 30.0  # a generation elsewhere that stores nothing for this long is taken for dead (replica gone)


class QueueFull(Exception):
    pass


@dataclass(eq=False)
class LiveSession:
    id: uuid.UUID
    user_id: int
    next_seq: int
    recent: list[BufferedEvent] = field(default_factory=list)  # everything emitted here, oldest dropped first
    persisted_seq: int = 0  # events up to this one are in the database
    sender: Send | None = None
    sent_seq: int = 0  # the attached client has every event up to this one
    send_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    jobs: asyncio.Queue[Job] = field(default_factory=lambda: asyncio.Queue(maxsize=8))
    worker: asyncio.Task[None] | None = None
    current_abort: Callable[[], None] | None = None  # stops the running generation
    busy: bool = False  # a job is running
    touched: float = field(default_factory=time.monotonic)  # last emitted, relayed, attached or detached
    config: dict[str, Any] = field(default_factory=dict)
    conversation_id: uuid.UUID | None = None

    async def emit(self, message: dict[str, Any]) -> None:
        """Number the event, keep it, and send it to the attached client (a dead socket just detaches)."""
        seq = self.next_seq
        self.next_seq += 1
        self.touched = time.monotonic()
        event = BufferedEvent(seq, {**message, "seq": seq})
        self.recent.append(event)
        if len(self.recent) > RECENT_EVENTS and self.recent[0].seq <= self.persisted_seq:
            del self.recent[0]
        async with self.send_lock:
            await self._send_up_to(seq)

    async def _send_up_to(self, seq: int) -> None:
        if self.sender is None or not self.recent:
            return
        # recent holds consecutive numbers: start at the first unsent one instead of scanning (this runs per token).
        start = max(0, self.sent_seq + 1 - self.recent[0].seq)
        for event in self.recent[start:]:
            if event.seq <= seq:
                try:
                    await self.sender(event.event)
                except Exception:  # noqa: BLE001 (the client went away; the session goes on)
                    self.sender = None
                    return
                self.sent_seq = event.seq

    async def relay(self, event: BufferedEvent) -> None:
        """Take on an event another replica numbered and stored, and send it to the attached client."""
        self.persisted_seq, self.next_seq = event.seq, event.seq + 1
        self.touched = time.monotonic()
        self.recent.append(event)
        if len(self.recent) > RECENT_EVENTS:
            del self.recent[0]
        async with self.send_lock:
            await self._send_up_to(event.seq)

    def unpersisted(self) -> list[BufferedEvent]:
        return [event for event in self.recent if event.seq > self.persisted_seq]


class WsHub:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], sealer: Sealer, *, queue_length: int = 8,
                 idle_expiry_s: float = 7 * 86400, persist_interval_s: float = 0.1,
                 forget_after_s: float = 30.0) -> None:
        self._sessionmaker = sessionmaker
        self.sealer = sealer
        self.queue_length = queue_length
        self.idle_expiry_s = idle_expiry_s
        self.persist_interval_s = persist_interval_s
        self.forget_after_s = forget_after_s
        self.sessions: dict[uuid.UUID, LiveSession] = {}
        self._closing = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_expiry = 0.0
        self._storing = asyncio.Lock()  # one writer of events at a time: two would store the same events twice

    def start(self) -> None:
        self._task = asyncio.create_task(self._housekeeping(), name="llmws-ws-hub")

    async def stored_seq(self, session_id: uuid.UUID, stored: int, client_seq: int) -> int:
        """The session's last stored sequence number, once it reaches ``client_seq`` (the client saw that far on
        another replica, which stores it within its persist interval) or ``CATCH_UP_S`` has passed."""
        here = self.sessions.get(session_id)
        if here is not None and client_seq < here.next_seq:  # the client is not ahead of this process
            return stored
        deadline = time.monotonic() + CATCH_UP_S
        while stored < client_seq and time.monotonic() < deadline:
            await asyncio.sleep(self.persist_interval_s / 2)
            async with self._sessionmaker() as session:
                stored = await session.scalar(select(WsSession.last_seq).where(WsSession.id == session_id)) or stored
        return stored

    def live(self, session_id: uuid.UUID, user_id: int, last_seq: int, config: dict[str, Any],
             conversation_id: uuid.UUID | None) -> LiveSession:
        found = self.sessions.get(session_id)
        if found is not None and not found.busy and found.jobs.empty() and last_seq >= found.next_seq:
            # Idle here while another replica added to it: what this process holds is stale; start from the database.
            if found.worker is not None:
                found.worker.cancel()
            del self.sessions[session_id]
            found = None
        if found is None:
            found = LiveSession(session_id, user_id, next_seq=last_seq + 1, persisted_seq=last_seq, config=config,
                                conversation_id=conversation_id, jobs=asyncio.Queue(maxsize=self.queue_length))
            if last_seq > 0:  # first, the end of a generation another replica may still be running
                found.jobs.put_nowait(self._follow_remote)
            found.worker = asyncio.create_task(self._work(found), name=f"llmws-ws-{session_id}")
            self.sessions[session_id] = found
        return found

    async def attach(self, live: LiveSession, send: Send, after_seq: int) -> None:
        """Send ``send`` every event after ``after_seq`` (stored ones first), then make it the live client."""
        live.touched = time.monotonic()
        async with live.send_lock:
            live.sender = None  # a newer connection takes the session over
            oldest_here = live.recent[0].seq if live.recent else live.next_seq
            if after_seq + 1 < oldest_here:  # the start of what is missed is only in the database
                async with self._sessionmaker() as session:
                    stored = await ws_buffer.events_after(session, self.sealer, live.id, after_seq)
                for event in stored:
                    if event.seq < oldest_here:
                        await send(event.event)
            live.sender, live.sent_seq = send, max(after_seq, oldest_here - 1)
            await live._send_up_to(live.next_seq - 1)

    def detach(self, live: LiveSession, send: Send) -> None:
        if live.sender is send:
            live.sender = None
            live.touched = time.monotonic()

    def submit(self, live: LiveSession, job: Job) -> None:
        try:
            live.jobs.put_nowait(job)
        except asyncio.QueueFull:
            raise QueueFull(f"this session already has {live.jobs.maxsize} requests waiting") from None

    async def _work(self, live: LiveSession) -> None:
        while True:
            job = await live.jobs.get()
            live.busy = True
            try:
                await job(live)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (one failed job must not stop the session's queue)
                log.exception("websocket session %s: a job failed", live.id)
                await live.emit({"type": "error", "code": "internal_error", "message": "the request failed"})
            finally:
                live.current_abort = None
                live.busy = False

    async def _follow_remote(self, live: LiveSession) -> None:
        """If the session's last stored event belongs to a generation still running (on another replica: the
        client moved), relay what that replica stores until the generation ends or goes quiet. Runs as the
        session's first job here, so this replica's own requests come after it and number on from its end."""
        async with self._sessionmaker() as session:
            last = await ws_buffer.events_after(session, self.sealer, live.id, live.next_seq - 2)
            stored_at = await session.scalar(select(WsEvent.created_at).where(
                WsEvent.session_id == live.id, WsEvent.seq == live.next_seq - 1))
        if not last or last[-1].event.get("type") not in GENERATION_OPEN or stored_at is None \
                or utcnow() - stored_at > timedelta(seconds=REMOTE_QUIET_S):  # cut short by a stop, long ago
            return
        heard = time.monotonic()
        while time.monotonic() - heard < REMOTE_QUIET_S:
            await asyncio.sleep(REMOTE_POLL_S)
            async with self._sessionmaker() as session:
                stored = await ws_buffer.events_after(session, self.sealer, live.id, live.next_seq - 1)
            for event in stored:
                await live.relay(event)
                if event.event.get("type") in GENERATION_END:
                    return
            if stored:
                heard = time.monotonic()
        log.warning("websocket session %s: the generation running elsewhere stored nothing for %.0f s; taking over",
                    live.id, REMOTE_QUIET_S)

    async def _housekeeping(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.persist_interval_s)
            try:
                await self.persist()
                self._forget_idle()
                if time.monotonic() - self._last_expiry > 60:
                    self._last_expiry = time.monotonic()
                    async with self._sessionmaker() as session:
                        await ws_buffer.expire_idle(session, utcnow() - timedelta(seconds=self.idle_expiry_s))
                        await session.commit()
            except Exception:  # noqa: BLE001 (the hub must outlive a database outage)
                log.exception("websocket hub: database error; retrying")

    def _forget_idle(self) -> None:
        """A session with no client, no work and nothing left to store leaves memory after ``forget_after_s``: the
        database holds it, and a ``hello`` (here or on another replica) takes it up from there."""
        now = time.monotonic()
        for live in [live for live in self.sessions.values()
                     if live.sender is None and not live.busy and live.jobs.empty()
                     and live.persisted_seq >= live.next_seq - 1 and now - live.touched > self.forget_after_s]:
            if live.worker is not None:
                live.worker.cancel()
            del self.sessions[live.id]

    async def persist(self) -> None:
        async with self._storing:
            await self._store_unpersisted()

    async def _store_unpersisted(self) -> None:
        batches = [(live, live.unpersisted()) for live in self.sessions.values()]
        batches = [(live, events) for live, events in batches if events]
        if not batches:
            return
        async with self._sessionmaker() as session:
            for live, events in batches:
                await ws_buffer.store(session, self.sealer, live.id, events)
            await session.commit()
        for live, events in batches:
            live.persisted_seq = events[-1].seq

    async def acknowledge(self, live: LiveSession, upto_seq: int) -> int:
        """Forget the session's events up to ``upto_seq`` (its client has them), in the database and in memory;
        returns how many went. Events not stored yet are stored first: stored after the trim, they would outlive
        it, and a resume would send them again."""
        async with self._storing:
            await self._store_unpersisted()
            async with self._sessionmaker() as session:
                removed = await ws_buffer.trim(session, live.id, upto_seq)
                await session.commit()
            live.recent = [event for event in live.recent if event.seq > upto_seq]
        return removed

    async def close(self) -> None:
        for live in self.sessions.values():
            if live.current_abort is not None:
                live.current_abort()
        # An aborted generation ends at once with its "done" (cancelled), which is stored with the rest: cancelled
        # before that, its buffer would end mid-answer and a client resuming elsewhere would wait for an end.
        deadline = time.monotonic() + CLOSE_GRACE_S
        while any(live.busy for live in self.sessions.values()) and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        workers = [live.worker for live in self.sessions.values() if live.worker is not None]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._closing.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.persist()
        except Exception:  # noqa: BLE001 (shutdown goes on; the loss is logged)
            log.exception("websocket hub: could not store the last events at shutdown")
