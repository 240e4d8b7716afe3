"""Resumable native chat streams.

A generation started on ``/v1/chat/stream`` runs in a task of its own, not in the request: its events go into a
buffer (numbered from 1) that clients follow. A client that drops and comes back with ``Last-Event-ID`` gets the
rest of the same generation. The buffer is also written to the database every ``persist_interval_s`` (in one batch
for all streams), so a replica that does not run the generation serves a reconnect from there. A stream nobody
follows for ``resume_window_s`` is cancelled; finished streams are kept for ``retention_s``, then deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.chat import output
from api.services.chat.serving import Generation
from api.services.errors import InvalidInput, NotFound
from db.models import ChatStream, ChatStreamEvent
from db.types import utcnow

log = logging.getLogger(__name__)

TERMINAL_EVENTS = {"done", "error"}
STORED_POLL_S = 0.2
FOLLOWER_HEARTBEAT_S = 1.0
PURGE_EVERY_S = 60.0
RUNNING_STREAM_TTL = timedelta(days=1)  # a stream whose replica died mid-generation is purged after this

OnFinish = Callable[[output.Transcript, Generation], Awaitable[None]]


@dataclass(frozen=True)
class StreamEvent:
    seq: int
    event: str
    data: str  # the event's JSON, serialised once for both the wire and the database

    def sse(self, stream_id: uuid.UUID) -> bytes:
        return f"id: {stream_id}:{self.seq}\nevent: {self.event}\ndata: {self.data}\n\n".encode()


@dataclass(eq=False)
class StreamRun:
    id: uuid.UUID
    user_id: int
    generation: Generation
    events: list[StreamEvent] = field(default_factory=list)
    persisted: int = 0  # events[:persisted] are in the database
    finished: bool = False
    stored_final: bool = False  # the stream row carries its final status
    status: str = "running"
    finished_at: float | None = None
    listeners: int = 0
    detached_since: float | None = field(default_factory=time.monotonic)
    task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def append(self, event: str, data: dict[str, Any]) -> None:
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
        self.events.append(StreamEvent(len(self.events) + 1, event, payload))
        self._changed.set()
        self._changed = asyncio.Event()

    def finish(self, status: str) -> None:
        self.status, self.finished, self.finished_at = status, True, time.monotonic()
        self._changed.set()

    async def changed(self) -> None:
        await self._changed.wait()


def parse_last_event_id(value: str, stream_id: uuid.UUID | None = None) -> tuple[uuid.UUID, int]:
    """``<stream id>:<seq>`` (what the server sends), or a bare ``<seq>`` when the stream is known from the URL."""
    head, _, tail = value.strip().rpartition(":")
    try:
        seq = int(tail)
        stream = uuid.UUID(head) if head else stream_id
    except ValueError:
        stream, seq = None, -1
    if stream is None or seq < 0 or (stream_id is not None and stream != stream_id):
        raise InvalidInput("Last-Event-ID must be '<stream id>:<event number>' as sent in the stream's ids",
                           param="Last-Event-ID", code="invalid_last_event_id")
    return stream, seq


class StreamHub:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, resume_window_s: float,
                 retention_s: float, persist_interval_s: float = 0.1) -> None:
        self._sessionmaker = sessionmaker
        self.resume_window_s = resume_window_s
        self.retention_s = retention_s
        self.persist_interval_s = persist_interval_s
        self.runs: dict[uuid.UUID, StreamRun] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()
        self._last_purge = 0.0
        self._persist_failed = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._housekeeping(), name="llmws-stream-hub")

    async def launch(self, generation: Generation, *, user_id: int, conversation_id: uuid.UUID | None,
                     on_finish: OnFinish) -> StreamRun:
        run = StreamRun(uuid.uuid4(), user_id, generation)
        async with self._sessionmaker() as session:
            session.add(ChatStream(id=run.id, user_id=user_id, conversation_id=conversation_id,
                                   model=generation.backend.model, expires_at=utcnow() + RUNNING_STREAM_TTL))
            await session.commit()
        run.append("start", {"stream_id": str(run.id), "conversation_id": str(conversation_id) if conversation_id
                             else None, **output.start(generation)})
        self.runs[run.id] = run
        run.task = asyncio.create_task(self._drive(run, on_finish), name=f"llmws-stream-{run.id}")
        return run

    async def _drive(self, run: StreamRun, on_finish: OnFinish) -> None:
        generation, meter = run.generation, run.generation.meter
        transcript = output.Transcript()
        try:
            async for result in output.results(generation):
                transcript.record(result)
                if isinstance(result, output.TextDelta):
                    run.append("token", {"text": result.text})
                elif isinstance(result, output.ToolCallPiece):
                    run.append("tool_call", output.tool_call_event(result))
                elif isinstance(result, output.Failed):
                    run.append("error", {"message": result.message, "code": result.code})
        except asyncio.CancelledError:
            pass  # the hub is shutting down: end the stream as cancelled
        except Exception as exc:  # noqa: BLE001 (the stream must end with an event, whatever failed)
            log.exception("native stream %s failed", run.id)
            failure = output.Failed("generation_failed", f"generation failed: {type(exc).__name__}")
            transcript.record(failure)
            run.append("error", {"message": failure.message, "code": failure.code})
        finally:
            await generation.close()
        if transcript.status != "error":
            run.append("metrics", {**output.metrics(meter), "completion_tokens": meter.completion_tokens})
            run.append("done", {"finish_reason": transcript.finish_reason, "usage": output.usage(meter),
                                **output.calls_of(transcript.tool_calls)})
        run.finish(transcript.status)
        try:
            await on_finish(transcript, generation)
        except Exception:  # noqa: BLE001 (the stream itself is complete; the reply just is not saved)
            log.exception("saving the reply of stream %s failed", run.id)

    async def cancel(self, stream_id: uuid.UUID, user_id: int) -> bool:
        """Stop a stream now: here if it runs here, else by flagging it for the replica that runs it (which
        checks every ``persist_interval_s``). False when the caller has no such stream."""
        run = self.runs.get(stream_id)
        if run is not None:
            if run.user_id != user_id:
                return False
            if not run.finished:
                run.generation.abort()
            return True
        async with self._sessionmaker() as session:
            flagged = await session.execute(
                update(ChatStream).where(ChatStream.id == stream_id, ChatStream.user_id == user_id)
                .values(cancel_requested=True))
            await session.commit()
        return bool(flagged.rowcount)  # type: ignore[attr-defined]

    async def follow(self, stream_id: uuid.UUID, user_id: int, after_seq: int) -> AsyncIterator[bytes]:
        """The stream's events after ``after_seq`` as SSE, until it ends. Raises ``NotFound`` up front."""
        run = self.runs.get(stream_id)
        if run is not None:
            if run.user_id != user_id:
                raise NotFound("no such stream", param="stream_id", code="stream_not_found")
            return self._follow_live(run, after_seq)
        async with self._sessionmaker() as session:
            stream = await session.get(ChatStream, stream_id)
        if stream is None or stream.user_id != user_id:
            raise NotFound("no such stream (it may have expired)", param="stream_id", code="stream_not_found")
        return self._follow_stored(stream_id, after_seq)

    def follow_run(self, run: StreamRun) -> AsyncIterator[bytes]:
        return self._follow_live(run, 0)

    async def _follow_live(self, run: StreamRun, after_seq: int) -> AsyncIterator[bytes]:
        run.listeners += 1
        run.detached_since = None
        try:
            seq = after_seq
            while True:
                if seq < len(run.events):
                    # Everything buffered goes out in one write: fewer sends when a client lags behind.
                    pending, seq = run.events[seq:], len(run.events)
                    yield b"".join(event.sse(run.id) for event in pending)
                    continue
                if run.finished:
                    return
                await run.changed()
        finally:
            run.listeners -= 1
            if run.listeners == 0:
                run.detached_since = time.monotonic()

    async def _follow_stored(self, stream_id: uuid.UUID, after_seq: int) -> AsyncIterator[bytes]:
        """Another replica runs the generation: read its stored events, and tell it somebody is following."""
        seq, beat = after_seq, 0.0
        # A beat several times per window: one late beat (a busy database, a busy machine) must not read as gone.
        every_s = min(FOLLOWER_HEARTBEAT_S, self.resume_window_s / 4)
        while True:
            async with self._sessionmaker() as session:
                if time.monotonic() - beat > every_s:
                    beat = time.monotonic()
                    await session.execute(update(ChatStream).where(ChatStream.id == stream_id)
                                          .values(follower_seen_at=utcnow()))
                    await session.commit()
                # Status first: a stream seen finished here has all its events stored by the time rows are read.
                status = await session.scalar(select(ChatStream.status).where(ChatStream.id == stream_id))
                rows = list(await session.scalars(
                    select(ChatStreamEvent).where(ChatStreamEvent.stream_id == stream_id, ChatStreamEvent.seq > seq)
                    .order_by(ChatStreamEvent.seq)))
            for row in rows:
                if row.seq != seq + 1:
                    break  # a gap: wait for the writer to catch up rather than skip an event
                seq = row.seq
                yield StreamEvent(row.seq, row.event, row.data).sse(stream_id)
                if row.event in TERMINAL_EVENTS:
                    return
            if status is None or (status != "running" and not rows):
                return
            await asyncio.sleep(STORED_POLL_S)

    async def _housekeeping(self) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), self.persist_interval_s)
            try:
                await self._apply_remote_control()
                await self.persist()
                self._forget_old()
                if time.monotonic() - self._last_purge > PURGE_EVERY_S:
                    await self.purge_expired()
            except Exception:  # noqa: BLE001 (the hub must outlive a database outage: a lost connection is an OSError)
                log.exception("stream hub: database error; retrying")

    async def _apply_remote_control(self) -> None:
        """Cancel the streams running here that were cancelled elsewhere, or that nobody follows anywhere."""
        running = [run for run in self.runs.values() if not run.finished]
        if not running:
            return
        try:
            async with self._sessionmaker() as session:
                flags = {row.id: row for row in (await session.execute(
                    select(ChatStream.id, ChatStream.cancel_requested, ChatStream.follower_seen_at)
                    .where(ChatStream.id.in_([run.id for run in running])))).all()}
        except Exception:  # noqa: BLE001 (without the database, abandoned streams are still cancelled)
            log.exception("stream hub: reading other replicas' cancels failed")
            flags = {}
        now, wall = time.monotonic(), utcnow()
        for run in running:
            flag = flags.get(run.id)
            if flag is not None and flag.cancel_requested:
                log.info("stream %s: cancelled from another replica", run.id)
                run.generation.abort()
                continue
            followed_elsewhere = (flag is not None and flag.follower_seen_at is not None
                                  and (wall - flag.follower_seen_at).total_seconds() <= self.resume_window_s)
            if (run.listeners == 0 and run.detached_since is not None and not followed_elsewhere
                    and now - run.detached_since > self.resume_window_s):
                log.info("stream %s: nobody reattached within %.0f s; cancelling", run.id, self.resume_window_s)
                run.generation.abort()

    async def persist(self) -> None:
        """Write every stream's new events (one transaction for all), and the final status of finished ones."""
        batches = [(run, len(run.events), run.finished) for run in self.runs.values()
                   if run.persisted < len(run.events) or (run.finished and not run.stored_final)]
        if not batches:
            return
        rows = [{"stream_id": run.id, "seq": event.seq, "event": event.event,
                 "data": event.data}
                for run, upto, _ in batches for event in run.events[run.persisted:upto]]
        unsure, self._persist_failed = self._persist_failed, True  # until this commit is known to have happened
        async with self._sessionmaker() as session:
            if unsure:
                # The last write may have committed without our hearing of it: replace, never duplicate.
                for run, _, _ in batches:
                    await session.execute(delete(ChatStreamEvent).where(ChatStreamEvent.stream_id == run.id,
                                                                        ChatStreamEvent.seq > run.persisted))
            if rows:
                await session.execute(insert(ChatStreamEvent), rows)
            now = utcnow()
            for run, _, finished in batches:
                if finished and not run.stored_final:
                    await session.execute(update(ChatStream).where(ChatStream.id == run.id).values(
                        status=run.status, finished_at=now, expires_at=now + timedelta(seconds=self.retention_s)))
            await session.commit()
        self._persist_failed = False
        for run, upto, finished in batches:
            run.persisted = upto
            run.stored_final = run.stored_final or finished

    def _forget_old(self) -> None:
        """Finished streams leave memory once stored and past the resume window; the database serves them on."""
        now = time.monotonic()
        for stream_id in [run.id for run in self.runs.values() if run.stored_final and run.finished_at is not None
                          and now - run.finished_at > self.resume_window_s]:
            del self.runs[stream_id]

    async def purge_expired(self) -> None:
        self._last_purge = time.monotonic()
        async with self._sessionmaker() as session:
            expired = select(ChatStream.id).where(ChatStream.expires_at < utcnow())
            await session.execute(delete(ChatStreamEvent).where(ChatStreamEvent.stream_id.in_(expired)))
            await session.execute(delete(ChatStream).where(ChatStream.expires_at < utcnow()))
            await session.commit()

    async def close(self) -> None:
        for run in self.runs.values():
            if not run.finished:
                run.generation.abort()
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)
        # Asked to stop, not cancelled: a cancel in the middle of a write can leave SQLite locked.
        self._closing.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            await self.persist()
        except Exception:  # noqa: BLE001 (shutdown goes on; the loss is logged)
            log.exception("stream hub: could not store the last stream events at shutdown")
