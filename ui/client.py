"""Every call the UI makes to the API goes through here: one typed method per endpoint the screens use.

The UI never imports ``db/`` or ``engine/``; what a script could do with the REST API is all it can do. Errors come
back as ``ApiError`` carrying the API's own message, so a screen can show it as it is.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import httpx

from ui.sse import SseEvent, SseParser

Json = dict[str, Any]
TERMINAL_EVENTS = {"done", "error"}
STOP_RUNNER_TIMEOUT_S = 45.0


class ApiError(Exception):
    """The API refused (its error shape), or could not be reached (status 0)."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    @classmethod
    def from_response(cls, response: httpx.Response) -> ApiError:
        try:
            error = response.json().get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        message = error.get("message") if isinstance(error, dict) else None
        return cls(response.status_code, message or f"the API answered {response.status_code}",
                   error.get("code") if isinstance(error, dict) else None,
                   error.get("param") if isinstance(error, dict) else None)

    @classmethod
    def unreachable(cls, exc: Exception) -> ApiError:
        return cls(0, f"the API could not be reached ({type(exc).__name__})", "unreachable")


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise ApiError.from_response(response)
    return response


def _without_none(params: Json) -> Json:
    return {name: value for name, value in params.items() if value is not None and value != ""}


class ApiClient:
    """One browser session's view of the API, authenticated with that session's token."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 15.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout_s)
        self._headers = headers
        self._timeout_s = timeout_s

    def close(self) -> None:
        self._http.close()

    # The verbs. Every method below is one of these with a path.
    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return _checked(self._http.request(method, path, **kwargs))
        except httpx.TransportError as exc:
            raise ApiError.unreachable(exc) from exc

    def _get(self, path: str, **params: Any) -> Any:
        return self._request("GET", path, params=_without_none(params)).json()

    def _send(self, method: str, path: str, body: Json | None = None) -> Any:
        response = self._request(method, path, json=body)
        return response.json() if response.content else None

    # Health: open to anyone, with each check's details only when this session is an admin's.
    def readiness(self) -> Json:
        """The API's /readyz report, or an ``unreachable`` report when the API does not answer."""
        try:
            return self._http.get("/readyz").json()
        except (httpx.HTTPError, ValueError) as exc:
            return {"status": "unreachable", "detail": type(exc).__name__}

    # Account.
    def login(self, username: str, password: str) -> Json:
        return self._send("POST", "/auth/login", {"username": username, "password": password})

    def register(self, username: str, password: str, email: str | None = None) -> Json:
        return self._send("POST", "/auth/register", _without_none(
            {"username": username, "password": password, "email": email}))

    def logout(self) -> None:
        self._send("POST", "/auth/logout")

    def me(self) -> Json:
        return self._get("/auth/me")

    def change_password(self, current_password: str, new_password: str) -> None:
        self._send("POST", "/auth/password", {"current_password": current_password, "new_password": new_password})

    def preferences(self) -> Json:
        return self._get("/auth/me/preferences")

    def save_preferences(self, preferences: Json) -> Json:
        return self._send("PUT", "/auth/me/preferences", preferences)

    def api_keys(self) -> Json:
        return self._get("/v1/keys")

    def create_api_key(self, name: str) -> Json:
        return self._send("POST", "/v1/keys", {"name": name})

    def revoke_api_key(self, key_id: int) -> None:
        self._send("DELETE", f"/v1/keys/{key_id}")

    def own_usage(self, group_by: str = "day") -> Json:
        return self._get("/v1/usage", group_by=group_by)

    # Models.
    def models(self) -> list[Json]:
        return self._get("/v1/models")["data"]

    # Projects, conversations, prompts.
    def projects(self, offset: int = 0, limit: int = 50) -> Json:
        return self._get("/v1/projects", offset=offset, limit=limit)

    def create_project(self, name: str, description: str | None = None, system_prompt: str | None = None,
                       default_model: str | None = None) -> Json:
        return self._send("POST", "/v1/projects", _without_none({
            "name": name, "description": description, "system_prompt": system_prompt,
            "default_model": default_model}))

    def update_project(self, project_id: str, changes: Json) -> Json:
        return self._send("PATCH", f"/v1/projects/{project_id}", changes)

    def delete_project(self, project_id: str) -> None:
        self._send("DELETE", f"/v1/projects/{project_id}")

    def conversations(self, offset: int = 0, limit: int = 50, project_id: str | None = None,
                      q: str | None = None) -> Json:
        return self._get("/v1/conversations", offset=offset, limit=limit, project_id=project_id, q=q)

    def conversation(self, conversation_id: str) -> Json:
        return self._get(f"/v1/conversations/{conversation_id}")

    def update_conversation(self, conversation_id: str, changes: Json) -> Json:
        return self._send("PATCH", f"/v1/conversations/{conversation_id}", changes)

    def delete_conversation(self, conversation_id: str) -> None:
        self._send("DELETE", f"/v1/conversations/{conversation_id}")

    def export_conversation(self, conversation_id: str, format: str = "markdown") -> str:  # noqa: A002
        return self._request("GET", f"/v1/conversations/{conversation_id}/export", params={"format": format}).text

    def remove_last_exchange(self, conversation_id: str) -> list[Json]:
        """Take back the last user turn and its reply; returns the removed messages."""
        return self._send("DELETE", f"/v1/conversations/{conversation_id}/last-exchange")["removed"]

    def prompts(self, offset: int = 0, limit: int = 200) -> Json:
        return self._get("/v1/prompts", offset=offset, limit=limit)

    def create_prompt(self, fields: Json) -> Json:
        return self._send("POST", "/v1/prompts", fields)

    def update_prompt(self, prompt_id: int, changes: Json) -> Json:
        return self._send("PATCH", f"/v1/prompts/{prompt_id}", changes)

    def delete_prompt(self, prompt_id: int) -> None:
        self._send("DELETE", f"/v1/prompts/{prompt_id}")

    # Admin: overview, users, usage.
    def overview(self, hours: int = 24) -> Json:
        return self._get("/admin/overview", hours=hours)

    def users(self, offset: int = 0, limit: int = 100) -> Json:
        return self._get("/admin/users", offset=offset, limit=limit)

    def create_user(self, username: str, password: str, role: str = "user", email: str | None = None) -> Json:
        return self._send("POST", "/admin/users", _without_none(
            {"username": username, "password": password, "role": role, "email": email}))

    def update_user(self, user_id: int, changes: Json) -> Json:
        return self._send("PATCH", f"/admin/users/{user_id}", changes)

    def usage_report(self, group_by: str = "day", since: str | None = None, until: str | None = None,
                     user_id: int | None = None) -> Json:
        return self._get("/admin/usage", group_by=group_by, since=since, until=until, user_id=user_id)

    def usage_csv(self, group_by: str = "day", since: str | None = None, until: str | None = None,
                  user_id: int | None = None) -> str:
        return self._request("GET", "/admin/usage", params=_without_none(
            {"group_by": group_by, "since": since, "until": until, "user_id": user_id, "format": "csv"})).text

    def usage_logs(self, offset: int = 0, limit: int = 50, **filters: Any) -> Json:
        return self._get("/admin/usage/logs", offset=offset, limit=limit, **filters)

    # Admin: gateway.
    def providers(self) -> Json:
        return self._get("/admin/providers")

    def create_provider(self, fields: Json) -> Json:
        return self._send("POST", "/admin/providers", fields)

    def update_provider(self, provider_id: int, changes: Json) -> Json:
        return self._send("PATCH", f"/admin/providers/{provider_id}", changes)

    def delete_provider(self, provider_id: int) -> None:
        self._send("DELETE", f"/admin/providers/{provider_id}")

    def test_provider(self, provider_id: int) -> Json:
        return self._send("POST", f"/admin/providers/{provider_id}/test")

    def catalog(self) -> Json:
        return self._get("/admin/models")

    def create_alias(self, fields: Json) -> Json:
        return self._send("POST", "/admin/models", fields)

    def replace_alias(self, model_id: int, fields: Json) -> Json:
        return self._send("PUT", f"/admin/models/{model_id}", fields)

    def delete_alias(self, model_id: int) -> None:
        self._send("DELETE", f"/admin/models/{model_id}")

    # Admin: the local engine, downloads, resources.
    def resources(self) -> Json:
        return self._get("/admin/resources")

    def local_models(self) -> Json:
        return self._get("/admin/engine/models")

    def switch_model(self, name: str) -> Json:
        return self._send("POST", "/admin/engine/switch", {"model": name})

    def unload_model(self) -> None:
        self._send("POST", "/admin/engine/unload")

    def start_download(self, source: str, name: str | None = None) -> Json:
        return self._send("POST", "/admin/engine/downloads", _without_none({"source": source, "name": name}))

    def downloads(self) -> Json:
        return self._get("/admin/engine/downloads")

    def download(self, job_id: str) -> Json:
        return self._get(f"/admin/engine/downloads/{job_id}")

    def cancel_download(self, job_id: str) -> Json:
        return self._send("DELETE", f"/admin/engine/downloads/{job_id}")

    def delete_local_model(self, name: str) -> None:
        self._send("DELETE", f"/admin/engine/models/{quote(name, safe='')}")

    # Admin: runners.
    def runner_templates(self) -> Json:
        return self._get("/admin/runners/templates")

    def preview_runner(self, spec: Json) -> Json:
        return self._send("POST", "/admin/runners/preview", spec)

    def launch_runner(self, spec: Json) -> Json:
        return self._send("POST", "/admin/runners", spec)

    def runners(self) -> Json:
        return self._get("/admin/runners")

    def runner(self, runner_id: str) -> Json:
        return self._get(f"/admin/runners/{runner_id}")

    def stop_runner(self, runner_id: str) -> Json:
        # The API answers once the process is gone: SIGTERM, then SIGKILL after its 10 s grace, so wait past that.
        return self._request("POST", f"/admin/runners/{runner_id}/stop", timeout=STOP_RUNNER_TIMEOUT_S).json()

    async def runner_log_tail(self, runner_id: str, after: int = 0, quiet_s: float = 0.3
                              ) -> tuple[list[tuple[int, str]], bool]:
        """The runner's log lines after line ``after`` that are there now, and whether its log has ended.

        The logs route streams live until the runner stops; this reads what arrives until ``quiet_s`` passes with
        nothing new, so a page can poll it like a tail without holding a connection open.
        """
        parser = SseParser()
        lines: list[tuple[int, str]] = []
        async with self._async_http() as http:
            try:
                async with http.stream("GET", f"/admin/runners/{runner_id}/logs", params={"after": after}) as response:
                    if response.is_error:
                        await response.aread()
                        raise ApiError.from_response(response)
                    reader = response.aiter_lines()
                    while True:
                        try:
                            line = await asyncio.wait_for(anext(reader), quiet_s)
                        except (TimeoutError, StopAsyncIteration):
                            return lines, False
                        event = parser.feed(line)
                        if event is None:
                            continue
                        if event.event == "end":
                            return lines, True
                        lines.append((int(event.id or 0), str(event.json().get("line", ""))))
            except httpx.TransportError as exc:
                raise ApiError.unreachable(exc) from exc

    # Native chat: streamed, resumed after a dropped connection, cancelled server-side.
    def _async_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.base_url, headers=self._headers,
                                 timeout=httpx.Timeout(self._timeout_s, read=300.0))

    async def chat_stream(self, body: Json, *, max_resumes: int = 5, resume_delay_s: float = 0.5
                          ) -> AsyncIterator[SseEvent]:
        """The events of one generation, ending with ``done`` or ``error``.

        A connection that drops after the first event is picked up again with ``Last-Event-ID``: the API keeps the
        generation going into a buffer, so the answer is resumed, not lost or started over.
        """
        parser = SseParser()
        resumes = 0
        async with self._async_http() as http:
            while True:
                parser.reconnected()
                if parser.last_event_id is None:
                    request = http.build_request("POST", "/v1/chat/stream", json=body)
                else:
                    stream_id = parser.last_event_id.partition(":")[0]
                    request = http.build_request("GET", f"/v1/chat/stream/{stream_id}",
                                                 headers={"Last-Event-ID": parser.last_event_id})
                try:
                    response = await http.send(request, stream=True)
                    try:
                        if response.is_error:
                            await response.aread()
                            raise ApiError.from_response(response)
                        async for line in response.aiter_lines():
                            event = parser.feed(line)
                            if event is not None:
                                yield event
                                if event.event in TERMINAL_EVENTS:
                                    return
                    finally:
                        await response.aclose()
                except httpx.TransportError as exc:
                    if parser.last_event_id is None:
                        raise ApiError.unreachable(exc) from exc
                resumes += 1
                if parser.last_event_id is None or resumes > max_resumes:
                    raise ApiError(0, "the answer's stream was lost and could not be resumed", "stream_lost")
                await asyncio.sleep(resume_delay_s)

    async def cancel_stream(self, stream_id: str) -> None:
        """Stop a generation on the server (the SSE connection closing alone would not: streams are resumable)."""
        async with self._async_http() as http:
            try:
                response = await http.post(f"/v1/chat/stream/{stream_id}/cancel")
            except httpx.TransportError as exc:
                raise ApiError.unreachable(exc) from exc
            if response.is_error and response.status_code != 404:  # 404: it had already finished
                raise ApiError.from_response(response)
