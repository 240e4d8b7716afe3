"""A fake Hugging Face hub serving one folder as a model repo, enough for `huggingface_hub`'s `model_info` and
`snapshot_download` (the API's repo info, and `resolve` with the headers it reads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.fake_openai import serve_in_thread

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class FakeHub:
    def __init__(self, repo: str, folder: Path) -> None:
        self.repo = repo
        self.files = {path.name: path.read_bytes() for path in sorted(folder.iterdir()) if path.is_file()}
        self.app = Starlette(routes=[
            Route("/api/models/{owner}/{name}", self.info),
            Route("/api/models/{owner}/{name}/revision/{revision}", self.info),
            Route("/api/models/{owner}/{name}/tree/{revision}", self.tree),
            Route("/{owner}/{name}/resolve/{revision}/{filename:path}", self.resolve, methods=["GET", "HEAD"]),
        ])
        self.base_url = ""
        self._server = None

    def _known(self, request: Request) -> bool:
        return f"{request.path_params['owner']}/{request.path_params['name']}" == self.repo

    async def info(self, request: Request) -> Response:
        if not self._known(request):
            return JSONResponse({"error": "Repository not found"}, status_code=404,
                                headers={"X-Error-Code": "RepoNotFound"})
        return JSONResponse({"id": self.repo, "modelId": self.repo, "sha": COMMIT, "private": False,
                             "siblings": [{"rfilename": name, "size": len(data)} for name, data in self.files.items()]})

    async def tree(self, request: Request) -> Response:
        if not self._known(request):
            return JSONResponse({"error": "Repository not found"}, status_code=404,
                                headers={"X-Error-Code": "RepoNotFound"})
        return JSONResponse([{"type": "file", "path": name, "size": len(data),
                              "oid": hashlib.sha1(data).hexdigest()}  # noqa: S324 (git's blob id is SHA-1)
                             for name, data in self.files.items()])

    async def resolve(self, request: Request) -> Response:
        data = self.files.get(request.path_params["filename"])
        if not self._known(request) or data is None:
            return JSONResponse({"error": "Entry not found"}, status_code=404,
                                headers={"X-Error-Code": "EntryNotFound"})
        headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{hashlib.sha256(data).hexdigest()}"',
                   "Content-Length": str(len(data))}
        return Response(b"" if request.method == "HEAD" else data, headers=headers,
                        media_type="application/octet-stream")

    def start(self) -> str:
        self._server, self.base_url = serve_in_thread(self.app)
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
