"""Usage rows written off the hot path: requests hand their record to a queue, a background task inserts them in
batches (and adds their tokens to the shared per-minute rate windows, settling what admission reserved there).
Nothing is lost on a client disconnect: the record is queued by the request's own cleanup, and closing the writer
flushes what is left.

A row the database refuses (a data error: too long, a NUL, a user deleted meanwhile) is found by halving the batch
and set aside, so it cannot hold back everyone else's usage; a lost connection keeps every row for the next try."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models import RateWindow, UsageDaily, UsageLog

log = logging.getLogger(__name__)

PURGE_EVERY_S = 300.0
RETRY_AFTER_S = 2.0
# Past this many unwritten rows (a database down for a long time) the oldest are dropped, loudly.
MAX_PENDING = 100_000
# Rows the database refused, kept (the latest ones) for an operator to look at; the counter counts them all.
MAX_SET_ASIDE = 1000
# SQLSTATE classes of errors that a given row causes whatever the database's state: data exception, constraint.
DATA_ERROR_CLASSES = {"22", "23"}


@dataclass(frozen=True)
class Reservation:
    """Tokens that admission added to ``subjects``' rate windows of ``minute`` before the request ran (its most:
    prompt + max_tokens × n); the usage row replaces them there with the real count."""

    minute: int
    tokens: int
    subjects: tuple[str, ...]


@dataclass(frozen=True)
class UsageRecord:
    request_id: str
    user_id: int | None
    api_key_id: int | None
    model: str
    backend: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float | None
    latency_ms: float
    tokens_per_s: float | None
    status: str  # ok, cancelled, error, rejected
    count_source: str  # engine, upstream, estimated
    reservation: Reservation | None = None  # not a column

    def rate_subjects(self) -> list[str]:
        subjects = [f"user:{self.user_id}"] if self.user_id is not None else []
        return subjects + ([f"key:{self.api_key_id}"] if self.api_key_id is not None else [])

    def window_tokens(self, finished_at: float) -> list[tuple[tuple[str, int], int]]:
        """What this request adds to each subject's rate window: its tokens in the minute it finished, or, where
        admission reserved tokens, the difference in the reservation's minute (counted once, never twice)."""
        total = self.prompt_tokens + self.completion_tokens
        reservation = self.reservation
        return [((subject, reservation.minute), total - reservation.tokens)
                if reservation is not None and subject in reservation.subjects
                else ((subject, int(finished_at) // 60), total) for subject in self.rate_subjects()]


class UsageWriter:
    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], *, interval_s: float = 0.5,
                 batch_size: int = 500) -> None:
        self._sessionmaker = sessionmaker
        self._interval_s = interval_s
        self._batch_size = batch_size
        self._pending: list[tuple[UsageRecord, float]] = []  # (record, when it finished: Unix time)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_purge = time.monotonic()
        self.set_aside: deque[UsageRecord] = deque(maxlen=MAX_SET_ASIDE)
        self.set_aside_total = 0

    @property
    def pending_count(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="llmws-usage-writer")

    def record(self, record: UsageRecord) -> None:
        self._pending.append((record, time.time()))
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            log.error("usage writer: the database has been unreachable too long; dropped %d usage rows", dropped)
        if len(self._pending) >= self._batch_size:
            self._wake.set()

    async def flush(self) -> None:
        """Write everything recorded so far. Rows recorded meanwhile wait for the next flush: looping until none
        were left kept a busy server writing back to back (each write takes a while under load, and rows arrive
        during it), a transaction of a few rows at a time instead of one batch per interval."""
        async with self._lock:
            left = len(self._pending)
            while left > 0 and self._pending:  # (record() may have dropped some meanwhile)
                size = min(left, self._batch_size)
                batch, self._pending = self._pending[:size], self._pending[size:]
                left -= size
                await self._write_setting_aside(batch)

    async def close(self) -> None:
        # The loop is asked to stop, not cancelled: a cancel in the middle of a write can leave SQLite locked.
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        try:
            while self._pending:  # a flush takes what was pending when it began: rows from streams still closing too
                await self.flush()
        except Exception:  # noqa: BLE001 (shutdown goes on; the loss is logged)
            log.exception("usage writer: %d usage rows could not be written at shutdown", len(self._pending))

    async def _loop(self) -> None:
        while not self._closing:
            try:
                async with asyncio.timeout(self._interval_s):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self.flush()
                if time.monotonic() - self._last_purge > PURGE_EVERY_S:
                    await self._purge_rate_windows()
            except Exception:  # noqa: BLE001 (the writer must outlive a database outage)
                log.exception("usage writer: writing usage failed; retrying")
                with contextlib.suppress(TimeoutError):  # back off; close() wakes it
                    async with asyncio.timeout(RETRY_AFTER_S):
                        await self._wake.wait()

    async def _write_setting_aside(self, batch: list[tuple[UsageRecord, float]]) -> None:
        """Write the batch; when the database refuses a row, halve until that row is alone, set it aside and write
        the rest. Any other failure puts back every row not yet written (halves already written stay written)."""
        chunks = [batch]
        while chunks:
            chunk = chunks.pop()
            try:
                await self._write(chunk)
            except BaseException as exc:  # a lost connection is an OSError, not only an SQLAlchemyError
                if not is_data_error(exc):
                    chunks.append(chunk)
                    self._pending[:0] = [row for unwritten in reversed(chunks) for row in unwritten]
                    raise
                if len(chunk) == 1:
                    self._set_aside(chunk[0][0], exc)
                else:
                    middle = len(chunk) // 2
                    chunks += [chunk[middle:], chunk[:middle]]  # the first half is written first

    def _set_aside(self, record: UsageRecord, exc: Exception) -> None:
        self.set_aside.append(record)
        self.set_aside_total += 1
        log.error("usage writer: the database refused a usage row, set aside (%d so far): %r: %s",
                  self.set_aside_total, record, str(exc).splitlines()[0])

    async def _purge_rate_windows(self) -> None:
        """Rate windows older than a few minutes count nothing any more."""
        self._last_purge = time.monotonic()
        async with self._sessionmaker() as session:
            await session.execute(delete(RateWindow).where(RateWindow.minute < int(time.time()) // 60 - 5))
            await session.commit()

    async def _write(self, batch: list[tuple[UsageRecord, float]]) -> None:
        tokens: Counter[tuple[str, int]] = Counter()
        daily: dict[tuple[Any, ...], DailySums] = {}
        for record, at in batch:
            for window, count in record.window_tokens(at):
                tokens[window] += count
            group = (datetime.fromtimestamp(at, UTC).date(), record.user_id, record.api_key_id, record.model,
                     record.backend, record.status)
            daily.setdefault(group, DailySums()).add(record)
        async with self._sessionmaker() as session:
            await session.execute(insert(UsageLog), [_row(record, at) for record, at in batch])
            for group, sums in daily.items():
                await add_daily(session, group, sums)
            for (subject, minute), count in tokens.items():
                await add_window_tokens(session, subject, minute, count)
            await session.commit()


def is_data_error(exc: BaseException) -> bool:
    """Whether the database refused what was sent (retrying the same rows fails again), rather than being
    unreachable, busy or shutting down (worth retrying)."""
    if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
        return False
    if isinstance(exc, IntegrityError | DataError):
        return True
    sqlstate = getattr(exc.orig, "sqlstate", None)  # asyncpg's errors that SQLAlchemy only wraps as DBAPIError
    return isinstance(sqlstate, str) and sqlstate[:2] in DATA_ERROR_CLASSES


def _row(record: UsageRecord, at: float) -> dict[str, Any]:
    # vars, not asdict: asdict deep-copies every field of every row (about a sixth of this write's CPU).
    row = vars(record) | {"created_at": datetime.fromtimestamp(at, UTC)}
    del row["reservation"]
    return row


@dataclass
class DailySums:
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms_sum: float = 0.0
    ttft_count: int = 0
    latency_ms_sum: float = 0.0

    def add(self, record: UsageRecord) -> None:
        self.requests += 1
        self.prompt_tokens += record.prompt_tokens
        self.completion_tokens += record.completion_tokens
        if record.ttft_ms is not None:
            self.ttft_ms_sum += record.ttft_ms
            self.ttft_count += 1
        self.latency_ms_sum += record.latency_ms


DAILY_GROUP = (UsageDaily.day, UsageDaily.user_id, UsageDaily.api_key_id, UsageDaily.model, UsageDaily.backend,
               UsageDaily.status)


async def add_daily(session: AsyncSession, group: tuple[Any, ...], sums: DailySums) -> None:
    """Add to the day's rollup row for this group, creating it when there is none yet."""
    match = [column.is_(None) if value is None else column == value for column, value in zip(DAILY_GROUP, group,
                                                                                              strict=True)]
    increments = {name: getattr(UsageDaily, name) + value for name, value in asdict(sums).items()}
    # One row only: if two replicas ever both inserted the group's row, adding to both would count twice.
    first = select(func.min(UsageDaily.id)).where(*match).scalar_subquery()
    if (await session.execute(update(UsageDaily).where(UsageDaily.id == first).values(increments))).rowcount:  # type: ignore[attr-defined]
        return
    session.add(UsageDaily(**dict(zip(("day", "user_id", "api_key_id", "model", "backend", "status"), group,
                                      strict=True)), **asdict(sums)))
    await session.flush()


async def add_window_tokens(session: AsyncSession, subject: str, minute: int, count: int) -> None:
    """Add tokens to a rate window, creating it if needed (portable: no dialect-specific upsert)."""
    statement = (update(RateWindow).where(RateWindow.subject == subject, RateWindow.minute == minute)
                 .values(tokens=RateWindow.tokens + count))
    if (await session.execute(statement)).rowcount:  # type: ignore[attr-defined]
        return
    if count <= 0:  # a reservation settled after its window was purged: nothing is left to take it from
        return
    try:
        async with session.begin_nested():
            session.add(RateWindow(subject=subject, minute=minute, requests=0, tokens=count))
    except IntegrityError:  # another replica created it in between
        await session.execute(statement)
