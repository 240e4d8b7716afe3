"""Runners: model-server processes this replica launches from a template, watches, and registers as providers.

Each runner's output (stdout and stderr together) goes into a ring buffer that `/admin/runners/{id}/logs`
streams. Once its `/v1/models` answers, it is registered as a provider (`runner_id` set) and the gateway can route
to it; when it stops, the provider is deactivated. With `restart`, a runner that exits on its own is started again
(after 1, 2, 4 … up to 30 s). When the gateway stops, every runner gets SIGTERM, then SIGKILL after a grace period.
A line of output is kept up to `LINE_CHARS` characters and marked where it was cut; a line of any length (a model
server dumping a tensor) is read past, never a reason to stop watching the runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import shutil
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.services.errors import Conflict, NotFound
from api.services.gateway.gateway import Gateway
from api.services.gateway.runner_templates import LaunchPlan
from db.models import Provider

log = logging.getLogger(__name__)

LOG_LINES = 2000
LINE_CHARS = 2000
READ_LIMIT = 1 << 20  # the most bytes of one line held in memory; the rest of a longer line is skipped
HEAD_BYTES = LINE_CHARS * 4  # enough for LINE_CHARS characters of UTF-8
STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 300.0


@dataclass(eq=False)
class Runner:
    id: str
    name: str
    plan: LaunchPlan
    restart: bool
    folder: Path
    env: dict[str, str]
    admin_password: str | None = None  # an llmws runner's own admin, to mint the key the gateway uses
    process: asyncio.subprocess.Process | None = None
    status: str = "starting"  # starting, running, exited, stopped, failed
    exit_code: int | None = None
    started_at: float | None = None
    restarts: int = 0
    provider_id: int | None = None
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    line_count: int = 0  # lines ever written, so a follower knows where it is
    new_line: asyncio.Condition = field(default_factory=asyncio.Condition)
    stopping: bool = False
    task: asyncio.Task[None] | None = None

    def public(self) -> dict[str, Any]:
        alive = self.status in ("starting", "running")
        return {"id": self.id, "name": self.name, "template": self.plan.template.name, "argv": self.plan.argv,
                "command": self.plan.command, "model": str(self.plan.model), "port": self.plan.port,
                "status": self.status, "exit_code": self.exit_code, "restart": self.restart,
                "restarts": self.restarts, "pid": self.process.pid if self.process and alive else None,
                "uptime_s": round(time.monotonic() - self.started_at, 1) if alive and self.started_at else None,
                "provider_id": self.provider_id, "base_url": f"http://127.0.0.1:{self.plan.port}/v1"}


class RunnerManager:
    def __init__(self, sessions: async_sessionmaker[AsyncSession], gateway: Gateway, work_dir: Path) -> None:
        self.sessions = sessions
        self.gateway = gateway
        self.work_dir = work_dir
        self._runners: dict[str, Runner] = {}

    def list(self) -> list[Runner]:
        return list(self._runners.values())

    def get(self, runner_id: str) -> Runner:
        runner = self._runners.get(runner_id)
        if runner is None:
            raise NotFound("no such runner on this server", param="runner_id")
        return runner

    async def launch(self, plan: LaunchPlan, name: str, *, restart: bool = False) -> Runner:
        if any(r.plan.port == plan.port and r.status in ("starting", "running") for r in self._runners.values()):
            raise Conflict(f"a runner already uses port {plan.port}", param="port")
        runner_id = uuid.uuid4().hex[:12]
        folder = self.work_dir / runner_id
        folder.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLMWS_")}
        runner = Runner(runner_id, name, plan, restart, folder, env)
        if plan.template.name == "llmws":
            runner.admin_password = secrets.token_urlsafe(24)
            model = plan.model
            env |= {"LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_MODEL_DIRS": str(model.parent),
                    "LLMWS_DEFAULT_MODEL": model.stem if model.is_file() else model.name,
                    "LLMWS_ADMIN_PASSWORD": runner.admin_password, "PYTHONUNBUFFERED": "1"}
        self._runners[runner_id] = runner
        runner.task = asyncio.create_task(self._supervise(runner), name=f"runner-{runner_id}")
        return runner

    async def stop(self, runner_id: str) -> Runner:
        runner = self.get(runner_id)
        runner.stopping = True
        await self._terminate(runner)
        if runner.task is not None:
            await asyncio.gather(runner.task, return_exceptions=True)
        return runner

    async def close(self) -> None:
        await asyncio.gather(*(self.stop(runner.id) for runner in list(self._runners.values())
                               if runner.status in ("starting", "running")), return_exceptions=True)

    async def follow(self, runner_id: str, after: int = 0) -> AsyncIterator[tuple[int, str]]:
        """(line number, line) for every line after ``after`` still in the buffer, then new ones as they come,
        until the runner has stopped and everything is sent."""
        runner = self.get(runner_id)
        while True:
            async with runner.new_line:
                if runner.line_count <= after and runner.status in ("starting", "running"):
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(runner.new_line.wait(), timeout=15)
            first_kept = runner.line_count - len(runner.lines)
            for number in range(max(after, first_kept), runner.line_count):
                yield number + 1, runner.lines[number - first_kept]
            after = runner.line_count
            if runner.status not in ("starting", "running") and after >= runner.line_count:
                return

    # --- one runner -------------------------------------------------------------------------------------------

    async def _supervise(self, runner: Runner) -> None:
        delay = 1.0
        while True:
            await self._run_once(runner)
            if runner.stopping or not runner.restart:
                break
            await self._log(runner, f"[llmws] exited with {runner.exit_code}; restarting in {delay:.0f} s")
            await asyncio.sleep(delay)
            if runner.stopping:
                break
            delay = min(30.0, delay * 2)
            runner.restarts += 1
        runner.status = "stopped" if runner.stopping else ("exited" if runner.exit_code == 0 else "failed")
        await self._set_provider_active(runner, False)
        async with runner.new_line:
            runner.new_line.notify_all()

    async def _run_once(self, runner: Runner) -> None:
        runner.status, runner.exit_code = "starting", None
        try:
            if runner.plan.template.name == "llmws":
                await self._prepare_llmws(runner)
            runner.process = await asyncio.create_subprocess_exec(
                *runner.plan.argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, env=runner.env, cwd=runner.folder, start_new_session=True,
                limit=READ_LIMIT)
        except OSError as exc:
            runner.status, runner.exit_code = "failed", None
            await self._log(runner, f"[llmws] could not start: {exc}")
            return
        runner.started_at = time.monotonic()
        await self._log(runner, f"[llmws] started pid {runner.process.pid}: {runner.plan.command}")
        registrar = asyncio.create_task(self._register_when_ready(runner))
        assert runner.process.stdout is not None
        async for line, cut_from in output_lines(runner.process.stdout):
            await self._log(runner, line.decode("utf-8", "replace").rstrip("\n"), cut_from)
        runner.exit_code = await runner.process.wait()
        registrar.cancel()
        await asyncio.gather(registrar, return_exceptions=True)
        await self._log(runner, f"[llmws] exited with code {runner.exit_code}")

    async def _prepare_llmws(self, runner: Runner) -> None:
        """An llmws runner needs its database migrated before it serves."""
        upgrade = await asyncio.create_subprocess_exec(
            runner.plan.argv[0], "db", "upgrade", stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=runner.env, cwd=runner.folder)
        output, _ = await upgrade.communicate()
        for line in output.decode("utf-8", "replace").splitlines():
            await self._log(runner, line)

    async def _register_when_ready(self, runner: Runner) -> None:
        base = f"http://127.0.0.1:{runner.plan.port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        key: str | None = None
        async with httpx.AsyncClient(timeout=5) as client:
            while time.monotonic() < deadline:
                try:
                    if key is None:  # minted once per start, not on every poll
                        key = await self._credential(client, base, runner)
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    answer = await client.get(f"{base}/v1/models", headers=headers)
                    if answer.status_code == 200:
                        await self._log(runner, "[llmws] /v1/models answers: registering as a provider")
                        await self._set_provider(runner, key)
                        if runner.status == "starting":  # not stopped meanwhile
                            runner.status = "running"  # only now: the gateway routes to it
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.5)
        await self._log(runner, "[llmws] never answered /v1/models; not registered")

    async def _credential(self, client: httpx.AsyncClient, base: str, runner: Runner) -> str | None:
        if runner.admin_password is None:
            return None
        login = await client.post(f"{base}/auth/login", json={"username": "admin",
                                                              "password": runner.admin_password})
        login.raise_for_status()
        token = login.json()["access_token"]
        key = await client.post(f"{base}/v1/keys", json={"name": "gateway"},
                                headers={"Authorization": f"Bearer {token}"})
        key.raise_for_status()
        return str(key.json()["key"])

    async def _set_provider(self, runner: Runner, key: str | None) -> None:
        async with self.sessions.begin() as session:
            row = (await session.scalars(select(Provider).where(Provider.runner_id == runner.id))).first()
            if row is None:
                row = Provider(name=f"runner-{runner.name}-{runner.id[:6]}", kind=runner.plan.template.kind,
                               base_url=f"http://127.0.0.1:{runner.plan.port}/v1", timeout_s=300.0,
                               runner_id=runner.id)
                session.add(row)
                await session.flush()
            row.is_active = True
            row.health_status, row.health_checked_at = "healthy", datetime.now(UTC)
            row.api_key_encrypted = self.gateway.seal_api_key(row.id, key) if key else None
            runner.provider_id = row.id
        await self.gateway.reload()

    async def _set_provider_active(self, runner: Runner, active: bool) -> None:
        if runner.provider_id is None:
            return
        async with self.sessions.begin() as session:
            row = await session.get(Provider, runner.provider_id)
            if row is not None:
                row.is_active = active
                row.health_status, row.health_checked_at = "unhealthy", datetime.now(UTC)
                row.health_detail = "its runner stopped"
        await self.gateway.reload()

    async def _terminate(self, runner: Runner) -> None:
        process = runner.process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)  # its own session: children (workers) go too
        try:
            await asyncio.wait_for(process.wait(), timeout=STOP_GRACE_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()

    async def _log(self, runner: Runner, line: str, cut_from: int | None = None) -> None:
        """Keep one line; ``cut_from`` is its length in bytes when ``line`` is only its start."""
        if len(line) > LINE_CHARS or cut_from is not None:
            line = f"{line[:LINE_CHARS]} [… cut: the line had {cut_from or len(line.encode())} bytes]"
        async with runner.new_line:
            runner.lines.append(line)
            runner.line_count += 1
            runner.new_line.notify_all()

    def forget(self, runner_id: str) -> None:
        runner = self.get(runner_id)
        if runner.status in ("starting", "running"):
            raise Conflict("stop the runner first", param="runner_id")
        self._runners.pop(runner_id)
        shutil.rmtree(runner.folder, ignore_errors=True)


async def output_lines(stream: asyncio.StreamReader) -> AsyncIterator[tuple[bytes, int | None]]:
    """Each line until the end of ``stream``, as (the line, None), or, for a line longer than the stream's limit
    (which `readline` refuses with an error), as (its start, its whole length in bytes), its rest read past."""
    head: bytes | None = None  # the start of a line too long for the buffer, while its rest is skipped
    length = 0
    while True:
        try:
            piece = await stream.readuntil(b"\n")
        except asyncio.IncompleteReadError as end:  # the stream ended, perhaps within a line
            piece = end.partial
            if head is not None:
                yield head, length + len(piece)
            elif piece:
                yield piece, None
            return
        except asyncio.LimitOverrunError as overrun:
            piece = await stream.read(overrun.consumed)
            head = piece[:HEAD_BYTES] if head is None else head
            length += len(piece)
            continue
        if head is None:
            yield piece, None
        else:
            yield head, length + len(piece)
        head, length = None, 0
