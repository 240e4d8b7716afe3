"""Fetching a model into the managed model folder: a Hugging Face repo id, or a git URL.

The fetch runs as a child process (`git clone`, or this package's `engine.hf_fetch` around `huggingface_hub`), so a
cancel can stop it at once, into a work folder outside every scanned model folder. Progress is the size of that
folder against the total where it is known (Hugging Face lists file sizes; git reports its own percentage). Only a
result that checks out as a model is moved into `<models>/<name>`; anything else is deleted.

The child gets an argument list, never a shell, and a minimal environment (`engine.fetch_child`); git may use only
https, http and file transports; the name is one plain path segment; and a result holding symbolic links is
refused, so nothing can point outside the folder. A download may not grow past `max_bytes`, nor leave less than
`min_free_bytes` free where it is written: the fetch is stopped and its partial files deleted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from engine.errors import (
    DownloadCancelled,
    DownloadFailed,
    DownloadRefused,
    DownloadTooLarge,
    InsufficientStorage,
    NameTaken,
)
from engine.fetch_child import GIT_SCHEMES, GitCredentials, child_environment, redact_urls, split_credentials
from engine.registry import ModelInfo, describe

log = logging.getLogger(__name__)

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
HF_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}")
REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,199}")
HF_HOSTS = {"huggingface.co", "hf.co"}
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
GIT_PERCENT = re.compile(r"(Receiving objects|Resolving deltas|Filtering content|Updating files):\s+(\d+)%")
POLL_S = 0.5
LOG_LINE_CHARS = 500


@dataclass(frozen=True)
class DownloadSource:
    kind: Literal["huggingface", "git"]
    location: str  # the repo id or the URL without credentials: what is fetched, logged, stored and shown
    revision: str | None = None
    credentials: GitCredentials | None = field(default=None, repr=False, compare=False)

    @property
    def default_name(self) -> str:
        last = self.location.rstrip("/").rsplit("/", 1)[-1]
        return last.removesuffix(".git")


@dataclass(frozen=True)
class Progress:
    stage: Literal["fetching", "checking", "installing"]
    bytes_done: int
    bytes_total: int | None
    percent: float | None
    eta_s: float | None


def parse_source(source: str, revision: str | None = None) -> DownloadSource:
    source = source.strip()
    if revision is not None and not REVISION.fullmatch(revision):
        raise DownloadRefused("revision must be a branch, tag or commit name", param="revision")
    if HF_REPO.fullmatch(source) and ".." not in source:
        return DownloadSource("huggingface", source, revision)
    parts = urlsplit(source)
    repo = parts.path.strip("/").removesuffix(".git")
    if parts.scheme == "https" and parts.netloc in HF_HOSTS and HF_REPO.fullmatch(repo) and ".." not in repo:
        # The seed's form: a repo's web address. Through the hub, not git, which would need git-lfs for weights.
        return DownloadSource("huggingface", repo, revision)
    if parts.scheme in GIT_SCHEMES and (parts.netloc or parts.scheme == "file") and parts.path.strip("/"):
        location, credentials = split_credentials(source)
        if credentials is not None and (parts.scheme == "file" or not credentials.host or any(
                ord(char) < 32 for char in credentials.username + credentials.password)):
            raise DownloadRefused("credentials in a git URL must be printable, on an http(s) URL with a host",
                                  param="source")
        return DownloadSource("git", location, revision, credentials)
    raise DownloadRefused("source must be a Hugging Face repo id (owner/name) or a git URL (https, http or file)",
                          param="source")


def target_folder(models_dir: Path, name: str) -> Path:
    """Where the model will live: one plain segment inside the managed folder, and not taken yet."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise DownloadRefused("name must be letters, digits, '.', '_' or '-' (at most 100), not a path",
                              param="name")
    target = models_dir / name
    if target.exists() or target.is_symlink():
        raise NameTaken(f"a model named {name!r} already exists", param="name")
    if target.resolve().parent != models_dir.resolve():
        raise DownloadRefused("name must stay inside the model folder", param="name")
    return target


def free_bytes(*folders: Path) -> int:
    """The least free space among the file systems of ``folders`` (the nearest existing folder of each)."""
    free = []
    for folder in folders:
        existing = next(parent for parent in (folder, *folder.parents) if parent.exists())
        free.append(shutil.disk_usage(existing).free)
    return min(free)


def check_free_space(folders: tuple[Path, ...], min_free_bytes: int, still_needed: int = 0) -> None:
    """Refuse when writing ``still_needed`` more bytes would leave less than ``min_free_bytes`` free."""
    free = free_bytes(*folders)
    if free - still_needed < min_free_bytes:
        needed = f"{still_needed} more bytes and " if still_needed else ""
        raise InsufficientStorage(f"not enough free disk space: the download needs {needed}{min_free_bytes} bytes "
                                  f"left free, and {free} are free", param="source")


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _, files in os.walk(folder):
        for file in files:
            try:
                total += os.lstat(os.path.join(root, file)).st_size
            except OSError:
                continue  # renamed or removed under us by the fetcher
    return total


class Download:
    """One download, run from a worker thread with `run()`; `cancel()` from any thread."""

    def __init__(self, source: DownloadSource, name: str, models_dir: Path, work_dir: Path, *,
                 hf_token: str | None = None, max_bytes: int | None = None, min_free_bytes: int = 0,
                 on_progress: Callable[[Progress], None] = lambda _: None,
                 on_log: Callable[[str], None] = lambda _: None) -> None:
        self.source, self.name = source, name
        self.models_dir, self.work_dir = models_dir.resolve(), work_dir.resolve()
        self.hf_token = hf_token
        self.max_bytes, self.min_free_bytes = max_bytes or None, min_free_bytes
        self.on_progress, self._on_log = on_progress, on_log
        self._process: subprocess.Popen[bytes] | None = None
        self._cancelled = threading.Event()
        self._stopped_by: DownloadFailed | DownloadRefused | None = None  # a limit that ended the fetch
        self._total: int | None = None
        self._git_percent: float | None = None

    def on_log(self, line: str) -> None:
        """Every line shown or kept passes here: no credentials in it, whatever the fetcher printed."""
        if self.source.credentials is not None:
            line = self.source.credentials.redact(line)
        self._on_log(redact_urls(line)[:LOG_LINE_CHARS])  # cut after redacting, so no part of a secret is kept

    def cancel(self) -> None:
        self._cancelled.set()
        self._terminate()

    def _terminate(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def run(self) -> ModelInfo:
        target = target_folder(self.models_dir, self.name)
        fetched = self.work_dir / "fetched"
        self.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._fetch(fetched)
            self._report("checking", fetched)
            info = check_model(fetched, self.models_dir)
            self._report("installing", fetched)
            target_folder(self.models_dir, self.name)  # someone may have taken the name meanwhile
            shutil.move(str(fetched), str(target))
            log.info("downloaded %s into %s", self.source.location, target)
            return describe(target, self.models_dir) or info
        finally:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    # --- fetching ---------------------------------------------------------------------------------------------

    def _fetch(self, fetched: Path) -> None:
        check_free_space(self._written_to, self.min_free_bytes)
        if self.source.kind == "git":
            command = ["git", "clone", "--progress", "--depth", "1"]
            if self.source.revision:
                command += ["--branch", self.source.revision]
            command += ["--", self.source.location, str(fetched)]
        else:
            command = [sys.executable, "-m", "engine.hf_fetch", self.source.location, str(fetched)]
            if self.source.revision:
                command += ["--revision", self.source.revision]
        env = child_environment(self.work_dir / "home", hf_token=self.hf_token if self.source.kind == "huggingface"
                                else None, git_credentials=self.source.credentials)
        self.on_log(f"fetching {self.source.location}")
        self._process = subprocess.Popen(  # noqa: S603 (an argument list built above from validated parts)
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            stdin=subprocess.DEVNULL, cwd=self.work_dir)
        if self._cancelled.is_set():
            self._process.terminate()
        reader = threading.Thread(target=self._read_output, args=(self._process,), daemon=True)
        reader.start()
        started = time.monotonic()
        while self._process.poll() is None:
            self._report("fetching", fetched, started)
            self._enforce_limits(fetched)
            time.sleep(POLL_S)
        reader.join(timeout=5)
        if self._cancelled.is_set():
            raise DownloadCancelled("the download was cancelled")
        self._enforce_limits(fetched)  # once more: a fetch can finish between two polls
        if self._stopped_by is not None:
            raise self._stopped_by
        if self._process.returncode != 0:
            raise DownloadFailed(f"{self.source.kind} fetch failed (exit {self._process.returncode}); see the log")
        for bookkeeping in (".git", ".cache"):  # git's objects; huggingface_hub's download metadata
            shutil.rmtree(fetched / bookkeeping, ignore_errors=True)
        self._report("fetching", fetched, started)

    @property
    def _written_to(self) -> tuple[Path, ...]:
        return (self.work_dir, self.models_dir)  # the fetch, then the move (a copy across file systems)

    def _enforce_limits(self, fetched: Path) -> None:
        """Stop the fetch once it passes the size cap, or would leave too little free space."""
        done = folder_bytes(fetched) if fetched.exists() else 0
        expected = max(self._total or 0, done)
        try:
            if self.max_bytes is not None and expected > self.max_bytes:
                raise DownloadTooLarge(f"the download is larger than the cap of {self.max_bytes} bytes "
                                       f"({'announced ' if expected > done else ''}{expected} bytes); stopped")
            check_free_space(self._written_to, self.min_free_bytes, expected - done)
        except (DownloadTooLarge, InsufficientStorage) as exc:
            if self._stopped_by is None:
                self._stopped_by = exc
                self.on_log(exc.message)
            self._terminate()

    def _read_output(self, process: subprocess.Popen[bytes]) -> None:
        """The fetcher's output as log lines; git redraws its progress with carriage returns."""
        assert process.stdout is not None
        pending = b""
        last_logged = 0.0
        while chunk := process.stdout.read1(4096):  # type: ignore[attr-defined]
            pending += chunk
            *lines, pending = re.split(rb"[\r\n]", pending)
            for raw in lines:
                line = raw.decode("utf-8", "replace").strip()
                if not line:
                    continue
                if line.startswith("{"):
                    self._read_fetcher_message(line)
                    continue
                if match := GIT_PERCENT.search(line):
                    self._git_percent = float(match.group(2)) if match.group(1) != "Resolving deltas" else None
                    if time.monotonic() - last_logged < 1.0 and not line.endswith("done."):
                        continue  # a redraw: log at most one a second
                    last_logged = time.monotonic()
                self.on_log(line)
        if pending.strip():
            self.on_log(pending.decode("utf-8", "replace").strip())

    def _read_fetcher_message(self, line: str) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            self.on_log(line)
            return
        if isinstance(message, dict) and isinstance(message.get("total_bytes"), int):
            self._total = message["total_bytes"]
            self.on_log(f"{message.get('files', '?')} files, {self._total} bytes")
        elif isinstance(message, dict) and isinstance(message.get("log"), str):
            self.on_log(message["log"])

    def _report(self, stage: Literal["fetching", "checking", "installing"], fetched: Path,
                started: float | None = None) -> None:
        done = folder_bytes(fetched) if fetched.exists() else 0
        percent = None
        if self._total:
            percent = min(100.0, 100.0 * done / self._total)
        elif self._git_percent is not None:
            percent = self._git_percent
        if stage != "fetching":
            percent = 100.0
        eta = None
        if started is not None and percent and 0 < percent < 100:
            elapsed = time.monotonic() - started
            eta = elapsed * (100 - percent) / percent
        self.on_progress(Progress(stage, done, self._total, percent, eta))


def check_model(folder: Path, models_dir: Path) -> ModelInfo:
    """The fetched folder must be a model this server can load: a config with safetensors weights whose headers
    read, or one GGUF; its tokenizer must load; no symbolic links; no git-lfs pointers left in place of weights."""
    for root, dirs, files in os.walk(folder):
        for entry in [*dirs, *files]:
            path = Path(root) / entry
            if path.is_symlink():
                raise DownloadFailed(f"the download holds a symbolic link ({path.relative_to(folder)}); refused")
            if path.is_file() and path.stat().st_size < 1024:
                with path.open("rb") as handle:
                    if handle.read(len(LFS_POINTER)) == LFS_POINTER:
                        raise DownloadFailed(f"{path.relative_to(folder)} is a git-lfs pointer: the repository keeps "
                                             "its weights in git-lfs, which this server does not have installed")
    try:
        info = describe(folder, models_dir)
    except Exception as exc:  # noqa: BLE001 (whatever is wrong with the files, the answer is the same)
        raise DownloadFailed(f"the download is not a readable model: {type(exc).__name__}: {exc}") from exc
    if info is None:
        raise DownloadFailed("the download is not a model: it needs config.json with .safetensors weights, "
                             "or one .gguf file")
    if info.format == "safetensors":
        from transformers import AutoConfig, AutoTokenizer

        try:
            AutoConfig.from_pretrained(folder)
            AutoTokenizer.from_pretrained(folder)
        except Exception as exc:  # noqa: BLE001
            raise DownloadFailed(f"the model's config or tokenizer does not load: {type(exc).__name__}: {exc}"
                                 ) from exc
    return info
