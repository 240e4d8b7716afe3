"""One WebSocket connection speaking the seed protocol (docs/websocket.md): ``hello`` first, then inference,
control and model-management messages. This is the transport: framing, limits, authentication, dispatch; what a
message says is read in ``ws_messages``, and what it asks for is done by the same services the HTTP routes call
(``local_models``, ``model_downloads``, ``backends``, the chat core through ``ws_inference``). Replies to control
messages (``welcome``, ``pong``, ``config_ack``, …) belong to the connection; everything a generation or a model
switch produces belongs to the session, carries a ``seq`` and is buffered for resume (``api/ws/hub.py``)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from fastapi import WebSocket

from api.services.accounts import auth
from api.services.accounts.principal import Principal
from api.services.errors import AuthenticationFailed, PermissionDenied, ServiceError
from api.services.models import local_models
from api.ws import buffer as ws_buffer
from api.ws import messages as ws_messages
from api.ws.access import PendingSockets, SocketCredential
from api.ws.hub import LiveSession, QueueFull, WsHub
from api.ws.inference import RequestIds, run_inference
from api.ws.messages import ProtocolError
from db.models import WsSession
from engine.errors import EngineError

if TYPE_CHECKING:
    from api.lifespan import AppServices
    from api.settings import Settings

log = logging.getLogger(__name__)

ADMIN_TYPES = {"switch_model", "download_model", "delete_model"}


class Channel:
    def __init__(self, websocket: WebSocket, services: AppServices, settings: Settings) -> None:
        self.ws = websocket
        self.services = services
        self.idle_timeout_s = settings.ws_idle_timeout.total_seconds()
        self.max_message_bytes = settings.ws_max_message_bytes
        self.rate_per_s = settings.ws_messages_per_second
        self.allowance = float(self.rate_per_s * 5)  # a token bucket: bursts of five seconds' worth
        self.last_message_at = self.last_received_at = time.monotonic()
        self.hello_deadline = self.last_received_at + settings.ws_hello_timeout.total_seconds()
        self.hub: WsHub = services.ws_hub
        self.pending: PendingSockets = services.ws_pending
        self.address = websocket.client.host if websocket.client else "unknown"
        self.is_pending = False  # holds one of its address's places for sockets without a hello
        self.credential: SocketCredential | None = None
        self.principal: Principal | None = None
        self.live: LiveSession | None = None
        self.closed = False

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send_text(json.dumps(message, ensure_ascii=False))

    async def error(self, code: str, message: str, **extra: Any) -> None:
        await self.send({"type": "error", "code": code, "message": message, **extra})

    async def run(self) -> None:
        await self.ws.accept()
        if not self.pending.admit(self.address):
            await self.close("too_many_connections", 1013, "this address has too many connections waiting for "
                             "'hello'; authenticate those first")
            return
        self.is_pending = True
        try:
            while not self.closed:
                received = await self._receive()
                if received is None or received["type"] == "websocket.disconnect":
                    return
                self.last_received_at = time.monotonic()
                text = received.get("text")
                if text is None and received.get("bytes") is not None:
                    text = received["bytes"].decode("utf-8", errors="replace")
                await self.handle(text or "")
        except Exception as exc:  # noqa: BLE001 (a broken socket ends this connection, never the server)
            if not isinstance(exc, RuntimeError | ConnectionError):
                log.exception("websocket connection failed")
        finally:
            self._leave_pending()
            if self.live is not None:
                self.hub.detach(self.live, self.send)

    async def _receive(self) -> dict[str, Any] | None:
        """The next frame; None once the socket is closed instead: silent too long, no ``hello`` in time, or its
        credential no longer good (judged again whenever its cached check lapses, so a quiet socket notices too)."""
        while True:
            now = time.monotonic()
            if self.credential is None and now >= self.hello_deadline:  # (however busy it keeps us with pings)
                await self.close("hello_timeout", 1008, "no 'hello' came in time; connect again and send it first")
                return None
            until_idle = self.last_received_at + self.idle_timeout_s - now
            if until_idle <= 0:
                await self.ws.close(code=1000, reason="idle")
                return None
            if self.credential is None:
                wait = min(until_idle, self.hello_deadline - now)
            else:
                wait = min(until_idle, self.credential.recheck_in(self.services.principal_cache))
            try:
                async with asyncio.timeout(wait):
                    return await self.ws.receive()
            except TimeoutError:
                pass
            if self.credential is not None and not await self._still_authorized():
                return None

    async def _still_authorized(self) -> bool:
        """Judge the socket's credential as it stands now (``self.principal`` follows a new role); one that is
        revoked, expired or disabled stops the session's generations and closes the socket."""
        assert self.credential is not None
        try:
            self.principal = await self.credential.principal(self.services.sessionmaker, self.services.principal_cache)
            return True
        except (AuthenticationFailed, PermissionDenied) as exc:
            if self.live is not None:
                self.hub.detach(self.live, self.send)  # the cancelled ends are kept in the session, not sent here
                _stop_generations(self.live, queued=True)
            await self.close("unauthorized", 1008, f"{exc.message}; this connection is closed", reason=exc.code)
            return False

    async def close(self, code: str, close_code: int, message: str, **extra: Any) -> None:
        """Say why in an ``error``, then close the socket."""
        self.closed = True
        await self.error(code, message, **extra)
        await self.ws.close(code=close_code, reason=code)

    def _leave_pending(self) -> None:
        if self.is_pending:
            self.is_pending = False
            self.pending.release(self.address)

    def _within_rate(self) -> bool:
        now = time.monotonic()
        self.allowance = min(self.rate_per_s * 5, self.allowance + (now - self.last_message_at) * self.rate_per_s)
        self.last_message_at = now
        if self.allowance < 1:
            return False
        self.allowance -= 1
        return True

    async def handle(self, text: str) -> None:
        if len(text.encode()) > self.max_message_bytes:
            await self.error("message_too_large", f"messages are limited to {self.max_message_bytes} bytes")
            return
        if not self._within_rate():
            await self.error("rate_limited", f"more than {self.rate_per_s} messages per second; slow down")
            return
        try:
            kind, message = ws_messages.parse(text)
        except ProtocolError as exc:
            await self.error(exc.code, exc.message)
            return
        handler = getattr(self, f"on_{kind}", None)
        if handler is None:
            await self.error("unknown_type", f"unknown message type {kind!r}")
            return
        if kind not in {"hello", "ping"} and self.live is None:
            await self.error("hello_first", "send 'hello' (with your token) first")
            return
        # Every message is judged against the credential as it stands now, as every HTTP request is.
        if self.credential is not None and kind != "hello" and not await self._still_authorized():
            return
        if kind in ADMIN_TYPES and not (self.principal and self.principal.user.is_admin):
            await self.error("admin_required", f"'{kind}' needs the admin role")
            return
        try:
            await handler(message)
        except (ProtocolError, ServiceError, EngineError) as exc:
            await self.error(exc.code, exc.message)

    # --- control ------------------------------------------------------------------------------------------------

    async def on_ping(self, message: dict[str, Any]) -> None:
        await self.send({"type": "pong", "time": time.time()})

    async def on_hello(self, message: dict[str, Any]) -> None:
        token = message.get("token") or ws_messages.bearer(self.ws.headers.get("authorization", ""))
        if not isinstance(token, str) or not token:
            raise ProtocolError("missing_credentials", "hello needs 'token' (a login token or an API key)")
        session_id = ws_messages.optional_uuid(message.get("session_id"), "session_id")
        last_seq = ws_messages.non_negative_int(message.get("last_seq", 0), "last_seq")
        async with self.services.sessionmaker() as db:
            principal = await auth.current_principal(db, self.services.principal_cache, token)
            row, resumed = await ws_buffer.open_session(db, principal.user.id, session_id)
            await db.commit()
            last_stored, config, conversation_id = row.last_seq, dict(row.config or {}), row.conversation_id
        if resumed:  # (a new session has no events anywhere: a client's claim to have seen some is not waited on)
            last_stored = await self.hub.stored_seq(row.id, last_stored, last_seq)
        if self.live is not None:
            self.hub.detach(self.live, self.send)
        self.credential, self.principal = SocketCredential.of(token), principal
        self._leave_pending()
        self.live = self.hub.live(row.id, principal.user.id, last_stored, config, conversation_id)
        await self.send({"type": "welcome", "session_id": str(row.id), "resumed": resumed,
                         "last_seq": self.live.next_seq - 1, "model": self.services.backends.default_name(principal),
                         "user": principal.user.username,
                         "capabilities": ["inference", "cancel", "config", "ack", "resources", "models",
                                          *(sorted(ADMIN_TYPES) if principal.user.is_admin else [])]})
        await self.hub.attach(self.live, self.send, last_seq)

    async def on_ack(self, message: dict[str, Any]) -> None:
        """``ack {seq}`` forgets the events up to ``seq``; the seed's bare ``ack``, everything this client was sent."""
        assert self.live is not None
        if message.get("seq") is None:
            seq = self.live.sent_seq
        else:  # not past the last event: an acknowledgement of events yet to come would delete them unseen
            seq = min(ws_messages.non_negative_int(message["seq"], "seq"), self.live.next_seq - 1)
        removed = await self.hub.acknowledge(self.live, seq)
        await self.send({"type": "ack_received", "seq": seq, "removed": removed})

    async def on_config(self, message: dict[str, Any]) -> None:
        assert self.live is not None
        merged = ws_messages.config_changes(message, self.live.config)
        async with self.services.sessionmaker() as db:
            row = await db.get(WsSession, self.live.id)
            if row is not None:
                row.config = merged
            await db.commit()
        self.live.config = merged
        await self.send({"type": "config_ack", "config": merged})

    async def on_get_resources(self, message: dict[str, Any]) -> None:
        await self.send({"type": "resources", **await local_models.resources(self.services.model_host)})

    async def on_list_models(self, message: dict[str, Any]) -> None:
        backends = self.services.backends
        await self.send({"type": "models_list", "current": backends.default_name(self.principal),
                         "models": [{"id": b.model, "backend": b.kind} for b in backends.available(self.principal)]})

    async def on_cancel(self, message: dict[str, Any]) -> None:
        assert self.live is not None
        _stop_generations(self.live, queued=bool(message.get("all")))

    # --- model management (admin) -------------------------------------------------------------------------------

    async def on_switch_model(self, message: dict[str, Any]) -> None:
        """To ``model`` (a name from list_models) or the seed's ``model_path`` (``models/<name>``): either names
        one of the models the scan of the model folders found, nothing else."""
        assert self.live is not None and self.principal is not None
        host, live = self.services.model_host, self.live
        stages: list[tuple[str, float]] = []
        target = await local_models.find(host, ws_messages.switch_reference(message), paths=True)
        await live.emit({"type": "log", "message": f"switching to {target.name}"})
        await local_models.switch(host, self.services.sessionmaker, target, actor_user_id=self.principal.user.id,
                                  progress=lambda stage, fraction: stages.append((stage, fraction)))
        for stage, fraction in stages:
            await live.emit({"type": "log", "message": stage, "progress": fraction})
        await live.emit({"type": "model_switched", "model": target.name})

    async def on_download_model(self, message: dict[str, Any]) -> None:
        """Start a download job; its `download_started`, `progress`, `log` and `download_finished` events go to
        this session (buffered and resumable like any other), while the socket stays free for other messages."""
        assert self.live is not None and self.principal is not None
        await self.services.downloads.start(*ws_messages.download_arguments(message), user_id=self.principal.user.id,
                                         listener=self.live.emit)

    async def on_delete_model(self, message: dict[str, Any]) -> None:
        assert self.live is not None and self.principal is not None
        name = ws_messages.model_name(message, "delete_model")
        removed = await local_models.delete(self.services.model_host, self.services.sessionmaker, name,
                                            actor_user_id=self.principal.user.id)
        await self.live.emit({"type": "log", "message": f"deleted {removed.name}"})
        await self.live.emit({"type": "model_deleted", "model": name})

    # --- inference ----------------------------------------------------------------------------------------------

    async def on_inference(self, message: dict[str, Any]) -> None:
        assert self.live is not None and self.principal is not None
        asked = ws_messages.inference(message, self.live.config)
        # The client's id is echoed in this session's events; the engine, the router and the usage log get one of
        # the server's own, unique: two clients choosing "1" must not cancel or bill each other's requests.
        ids = RequestIds.for_client(asked.client_id)
        user_id, key_id = self.principal.user.id, self.principal.api_key_id

        async def job(live: LiveSession) -> None:
            await run_inference(self.services, live, user_id, key_id, ids, asked.model, asked.system, asked.messages,
                                asked.sampling, asked.options)

        try:
            self.hub.submit(self.live, job)
        except QueueFull as exc:
            await self.error("queue_full", str(exc), request_id=ids.wire)


def _stop_generations(live: LiveSession, *, queued: bool) -> None:
    """End the running generation (it ends with ``done`` cancelled) and, with ``queued``, drop the waiting ones."""
    if queued:
        while not live.jobs.empty():
            live.jobs.get_nowait()
    if live.current_abort is not None:
        live.current_abort()


