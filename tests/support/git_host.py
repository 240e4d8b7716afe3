"""Git repositories to download models from: one made in a folder (a file:// URL), and a git host on loopback that
wants a password: git's own `git http-backend` (smart HTTP, so `--depth 1` works) behind HTTP basic auth, serving
the bare repositories in one folder."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bench.fake_openai import serve_in_thread


def git_repo(folder: Path, files_from: Path | None = None, extra: dict[str, bytes] | None = None,
             links: dict[str, str] | None = None) -> str:
    """A git repository made here, as a file:// URL: a copy of ``files_from`` plus ``extra`` files and symbolic
    ``links`` (name → target)."""
    folder.mkdir(parents=True)
    if files_from is not None:
        shutil.copytree(files_from, folder, dirs_exist_ok=True)
    for name, content in (extra or {}).items():
        (folder / name).write_bytes(content)
    for name, target in (links or {}).items():
        os.symlink(target, folder / name)
    git = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "model"], check=True)
    return folder.as_uri()


HTTP_BACKEND = subprocess.run(["git", "--exec-path"], capture_output=True, text=True,  # noqa: S607
                              check=True).stdout.strip() + "/git-http-backend"


class FakeGitHost:
    def __init__(self, root: Path, username: str, password: str) -> None:
        self.root = root
        self.expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self.authorizations: list[str | None] = []  # every request's Authorization header, for the test to read
        self.app = Starlette(routes=[Route("/{path:path}", self.serve, methods=["GET", "POST"])])
        self._server = None

    def add(self, name: str, working_copy: str) -> str:
        """A bare clone of ``working_copy`` (a URL) served as ``/<name>.git``; its path on this host."""
        subprocess.run(["git", "clone", "-q", "--bare", working_copy, str(self.root / f"{name}.git")],  # noqa: S607
                       check=True)
        return f"/{name}.git"

    async def serve(self, request: Request) -> Response:
        self.authorizations.append(request.headers.get("authorization"))
        if request.headers.get("authorization") != self.expected:
            return Response("who are you?", status_code=401, headers={"WWW-Authenticate": 'Basic realm="fake"'})
        env = {"GIT_PROJECT_ROOT": str(self.root), "GIT_HTTP_EXPORT_ALL": "1", "REMOTE_USER": "tester",
               "PATH_INFO": request.url.path, "QUERY_STRING": request.url.query,
               "REQUEST_METHOD": request.method, "CONTENT_TYPE": request.headers.get("content-type", ""),
               "HTTP_CONTENT_ENCODING": request.headers.get("content-encoding", ""),
               "HTTP_GIT_PROTOCOL": request.headers.get("git-protocol", "")}
        body = await request.body()
        env["CONTENT_LENGTH"] = str(len(body))
        process = await asyncio.create_subprocess_exec(HTTP_BACKEND, env=env, stdin=subprocess.PIPE,
                                                       stdout=subprocess.PIPE)
        output, _ = await process.communicate(body)
        head, _, content = output.partition(b"\r\n\r\n")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n") if ": " in line)
        status = int(headers.pop("Status", "200").split()[0])
        return Response(content, status_code=status, headers=headers)

    def start(self) -> str:
        self._server, base_url = serve_in_thread(self.app)
        return base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
