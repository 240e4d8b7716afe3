"""Model downloads as background jobs: one task per download, its state in `background_jobs` (so the admin API of
any replica can list it), its progress and log lines pushed in order to whoever listens (a WebSocket session).

The fetching itself is `engine.downloads`; this module owns the job's life: start, progress, cancel, the end. Its
start and its end are audited (`local_model.download_started`, `local_model.download_finished`), whoever asked
for it: the admin REST API and the WebSocket both start jobs here.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services import audit
from api.services.errors import InvalidInput
from db.models import BackgroundJob
from engine.downloads import (
    Download,
    Progress,
    check_free_space,
    parse_source,
    target_folder,
)
from engine.errors import DownloadCancelled, EngineError, NameTaken

log = logging.getLogger(__name__)

JOB_KIND = "model_download"
LOG_LINES = 200
SAVE_EVERY_S = 1.0

Listener = Callable[[dict[str, Any]], Awaitable[None]]
# What a download's arguments may hold: the REST schema's limits (`DownloadRequest`) and `checked_arguments`'s.
MAX_SOURCE_CHARS, MAX_NAME_CHARS, MAX_REVISION_CHARS = 500, 100, 200


def checked_arguments(source: object, name: object = None, revision: object = None
                      ) -> tuple[str, str | None, str | None]:
    """A download's arguments as a client sent them (an empty name or revision: none), checked as the REST schema
    checks them, so that a caller without one (the WebSocket) is held to the same limits."""
    if not isinstance(source, str) or not source:
        raise InvalidInput("a download needs 'source': a Hugging Face repo id or a git URL", param="source",
                           code="missing_field")
    checked: list[str | None] = []
    for field_name, value, limit in (("source", source, MAX_SOURCE_CHARS), ("name", name, MAX_NAME_CHARS),
                                     ("revision", revision, MAX_REVISION_CHARS)):
        if value is not None and not isinstance(value, str):
            raise InvalidInput(f"'{field_name}' must be a string", param=field_name)
        if value and len(value) > limit:
            raise InvalidInput(f"'{field_name}' is longer than {limit} characters", param=field_name)
        checked.append(value or None)
    return source, checked[1], checked[2]


@dataclass(eq=False)
class DownloadJob:
    id: uuid.UUID
    name: str
    source: str  # without any credentials the URL carried
    download: Download
    user_id: int | None = None
    status: str = "running"
    progress: Progress | None = None
    error: str | None = None
    model: dict[str, Any] | None = None
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    listeners: list[Listener] = field(default_factory=list)
    events: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None

    def public(self) -> dict[str, Any]:
        progress = self.progress
        return {
            "id": str(self.id), "kind": JOB_KIND, "status": self.status, "name": self.name, "source": self.source,
            "stage": progress.stage if progress else None,
            "bytes": progress.bytes_done if progress else 0,
            "total_bytes": progress.bytes_total if progress else None,
            "percent": progress.percent if progress else None,
            "eta_s": progress.eta_s if progress else None,
            "error": self.error, "model": self.model, "log": list(self.log),
        }


class DownloadJobs:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], models_dir: Path, work_root: Path, *,
                 hf_token: str | None = None, names_in_use: Callable[[], Iterable[str]] = tuple,
                 max_bytes: int | None = None, min_free_bytes: int = 0) -> None:
        self.sessions = sessions
        self.names_in_use = names_in_use  # every model the server can see: a name must say which one it means
        self.models_dir = models_dir
        self.work_root = work_root
        self.hf_token = hf_token
        self.max_bytes, self.min_free_bytes = max_bytes, min_free_bytes
        self._jobs: dict[uuid.UUID, DownloadJob] = {}

    async def start(self, source: str, name: str | None = None, revision: str | None = None, *,
                    user_id: int | None = None, ip: str | None = None,
                    listener: Listener | None = None) -> DownloadJob:
        """Check the request (``checked_arguments`` first) and start the job; refusals (bad source or name, a name
        taken or being downloaded, a full disk) raise `DownloadRefused` before anything is written."""
        source, name, revision = checked_arguments(source, name, revision)
        parsed = parse_source(source, revision)
        name = name or parsed.default_name
        self.models_dir.mkdir(parents=True, exist_ok=True)
        target_folder(self.models_dir, name)
        await asyncio.to_thread(check_free_space, (self.models_dir, self.work_root), self.min_free_bytes)
        if any(job.name == name and job.status == "running" for job in self._jobs.values()):
            raise NameTaken(f"{name!r} is being downloaded already", param="name")
        if name in await asyncio.to_thread(lambda: set(self.names_in_use())):
            raise NameTaken(f"a model named {name!r} already exists", param="name")
        job_id = uuid.uuid4()
        loop = asyncio.get_running_loop()

        def from_thread(event: dict[str, Any]) -> None:
            loop.call_soon_threadsafe(job.events.put_nowait, event)

        download = Download(parsed, name, self.models_dir, self.work_root / str(job_id), hf_token=self.hf_token,
                            max_bytes=self.max_bytes, min_free_bytes=self.min_free_bytes,
                            on_progress=lambda progress: from_thread({"type": "progress", "progress": progress}),
                            on_log=lambda line: from_thread({"type": "log", "message": line}))
        job = DownloadJob(job_id, name, parsed.location, download, user_id=user_id)
        if listener is not None:
            job.listeners.append(listener)
        async with self.sessions.begin() as session:
            session.add(BackgroundJob(id=job_id, kind=JOB_KIND, status="running", created_by=user_id,
                                      started_at=datetime.now(UTC), detail=_detail(job)))
            audit.record(session, "local_model.download_started", actor_user_id=user_id, subject=name,
                         target_type="background_job", target_id=job_id, ip=ip,
                         detail={"source": parsed.location, "kind": parsed.kind, "revision": parsed.revision})
        self._jobs[job_id] = job
        job.events.put_nowait({"type": "download_started", "job_id": str(job_id), "name": name,
                               "source": parsed.location, "kind": parsed.kind})
        job.task = asyncio.create_task(self._run(job), name=f"download-{name}")
        log.info("download %s started: %s into %s", job_id, parsed.location, name)
        return job

    def get(self, job_id: uuid.UUID) -> DownloadJob | None:
        return self._jobs.get(job_id)

    async def list(self, limit: int = 50) -> list[dict[str, Any]]:
        """Recent download jobs from the database (every replica's), with this replica's live state on top."""
        async with self.sessions() as session:
            rows = (await session.scalars(select(BackgroundJob).where(BackgroundJob.kind == JOB_KIND)
                                          .order_by(BackgroundJob.created_at.desc()).limit(limit))).all()
        return [self._jobs[row.id].public() if row.id in self._jobs else _from_row(row) for row in rows]

    async def describe(self, job_id: uuid.UUID) -> dict[str, Any] | None:
        if job_id in self._jobs:
            return self._jobs[job_id].public()
        async with self.sessions() as session:
            row = await session.get(BackgroundJob, job_id)
        return _from_row(row) if row is not None and row.kind == JOB_KIND else None

    def cancel(self, job_id: uuid.UUID) -> bool:
        """Stop a running download of this replica; False when there is none."""
        job = self._jobs.get(job_id)
        if job is None or job.status != "running":
            return False
        job.download.cancel()
        return True

    async def close(self) -> None:
        for job in self._jobs.values():
            if job.status == "running":
                job.download.cancel()
        await asyncio.gather(*(job.task for job in self._jobs.values() if job.task), return_exceptions=True)

    # --- one job ----------------------------------------------------------------------------------------------

    async def _run(self, job: DownloadJob) -> None:
        publisher = asyncio.create_task(self._publish(job))
        try:
            info = await asyncio.to_thread(job.download.run)
            job.model = {"name": info.name, "format": info.format, "architecture": info.architecture,
                         "parameters": info.parameters, "size_bytes": info.size_bytes}
            job.status = "completed"
        except DownloadCancelled:
            job.status = "cancelled"
        except EngineError as exc:
            job.status, job.error = "failed", exc.message
        except Exception as exc:  # noqa: BLE001 (a download's failure is its job's state, never the server's)
            log.exception("download %s failed", job.id)
            job.status, job.error = "failed", f"{type(exc).__name__}: {exc}"
        log.info("download %s %s%s", job.id, job.status, f": {job.error}" if job.error else "")
        job.events.put_nowait({"type": "download_finished", "job_id": str(job.id), "name": job.name,
                               "status": job.status, "error": job.error, "model": job.model})
        job.events.put_nowait(None)
        await publisher
        await self._save(job, finished=True)

    async def _publish(self, job: DownloadJob) -> None:
        """Events in the order they happened, to the job's state, its listeners, and (now and then) the database."""
        saved_at = 0.0
        loop = asyncio.get_running_loop()
        while (event := await job.events.get()) is not None:
            if event["type"] == "progress":
                progress: Progress = event.pop("progress")
                job.progress = progress
                event |= {"job_id": str(job.id), "stage": progress.stage, "bytes": progress.bytes_done,
                          "total_bytes": progress.bytes_total, "percent": progress.percent, "eta_s": progress.eta_s}
                if loop.time() - saved_at >= SAVE_EVERY_S:
                    saved_at = loop.time()
                    await self._save(job)
            elif event["type"] == "log":
                job.log.append(event["message"])
                event["job_id"] = str(job.id)
            for listener in list(job.listeners):
                try:
                    await listener(dict(event))
                except Exception:  # noqa: BLE001 (a listener that went away must not stop the others)
                    log.warning("a download listener failed; dropping it", exc_info=True)
                    job.listeners.remove(listener)

    async def _save(self, job: DownloadJob, *, finished: bool = False) -> None:
        try:
            async with self.sessions.begin() as session:
                row = await session.get(BackgroundJob, job.id)
                if row is None:
                    return
                row.status = job.status
                row.progress = (job.progress.percent or 0.0) / 100 if job.progress else 0.0
                row.detail = _detail(job)
                row.error = job.error
                if finished:
                    row.finished_at = datetime.now(UTC)
                    audit.record(session, "local_model.download_finished", actor_user_id=job.user_id,
                                 subject=job.name, target_type="background_job", target_id=job.id,
                                 detail={"status": job.status, "error": job.error, "source": job.source})
        except Exception:  # noqa: BLE001 (the database being briefly away must not kill the download)
            log.warning("could not save download job %s", job.id, exc_info=True)


def _detail(job: DownloadJob) -> dict[str, Any]:
    public = job.public()
    return {key: public[key] for key in ("name", "source", "stage", "bytes", "total_bytes", "eta_s", "model")} | {
        "log": list(job.log)[-20:]}


def _from_row(row: BackgroundJob) -> dict[str, Any]:
    detail = row.detail or {}
    return {
        "id": str(row.id), "kind": row.kind, "status": row.status, "name": detail.get("name"),
        "source": detail.get("source"),
        "stage": detail.get("stage"), "bytes": detail.get("bytes", 0), "total_bytes": detail.get("total_bytes"),
        "percent": row.progress * 100, "eta_s": detail.get("eta_s"), "error": row.error,
        "model": detail.get("model"), "log": detail.get("log", []),
    }
