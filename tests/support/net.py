"""Ports on loopback, and waiting for a server (a process or one in this event loop) to listen."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; a test that starts a server there may race, rarely)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_answering(url: str, process: subprocess.Popen[bytes], console: Path, *, timeout_s: float,
                         what: str, poll_s: float = 0.2, probe_timeout_s: float = 1) -> None:
    """Returns once ``url`` answers 200; kills ``process`` and fails the test (with its console) if it exits or
    ``timeout_s`` passes first."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(url, timeout=probe_timeout_s).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{what} did not start:\n{console.read_text()}")
        time.sleep(poll_s)


@contextlib.asynccontextmanager
async def uvicorn_in_loop(app: FastAPI, *, start_timeout_s: float = 30) -> AsyncIterator[int]:
    """``app`` (its lifespan already entered by the caller) behind a real uvicorn in this event loop; its port."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    serving = asyncio.create_task(server.serve())
    for _ in range(int(start_timeout_s / 0.02)):
        if server.started or serving.done():
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
