"""The API in process: the app with its real lifespan entered, and an httpx client of it from a given address."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence

import httpx
from fastapi import FastAPI

from api.app import create_app
from api.services.gateway.backends import Backend
from api.settings import Settings


@contextlib.asynccontextmanager
async def running_app(settings: Settings, *, extra_backends: Sequence[Backend] = (),
                      model_loaded: bool = False) -> AsyncIterator[FastAPI]:
    """The app inside its lifespan; with ``model_loaded``, once the local model has loaded (or failed to)."""
    application = create_app(settings, extra_backends=extra_backends)
    async with application.router.lifespan_context(application):
        if model_loaded:
            await application.state.services.model_loading
        yield application


def client_from(app: FastAPI, address: str = "127.0.0.1") -> httpx.AsyncClient:
    """An httpx client of the in-process app whose requests come from this client address."""
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://llmws.test")
