"""Model downloads below the API: what a source and a name may be, what a fetched folder must hold to be
installed, and that a cancel stops a fetch that hangs."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from engine.downloads import Download, free_bytes, parse_source, target_folder
from engine.errors import (
    DownloadCancelled,
    DownloadFailed,
    DownloadRefused,
    DownloadTooLarge,
    InsufficientStorage,
    NameTaken,
)
from tests.support.git_host import FakeGitHost, git_repo


@pytest.mark.parametrize("source", ["ftp://example.org/model", "ext::sh -c touch% /tmp/pwned", "-uhttps://x/y",
                                    "owner/../name", "/etc/passwd", "file://", "justaname", ""])
def test_sources_that_are_neither_a_repo_id_nor_an_allowed_url_are_refused(source: str) -> None:
    with pytest.raises(DownloadRefused) as refused:
        parse_source(source)
    assert refused.value.param == "source"


def test_repo_ids_and_urls_are_told_apart() -> None:
    assert parse_source("HuggingFaceTB/SmolLM2-135M").kind == "huggingface"
    # The seed's form, a repo's web address, goes through the hub too (git would need git-lfs for the weights).
    assert parse_source("https://huggingface.co/HuggingFaceTB/SmolLM2-135M").location == "HuggingFaceTB/SmolLM2-135M"
    git = parse_source("https://git.example.org/models/tiny.git", revision="v1")
    assert (git.kind, git.default_name, git.revision) == ("git", "tiny", "v1")
    with pytest.raises(DownloadRefused):
        parse_source("owner/name", revision="--upload-pack=evil")


@pytest.mark.parametrize("name", ["../escape", "a/b", "/abs", "..", ".hidden", "x" * 101, "with space"])
def test_names_are_one_plain_segment(tmp_path: Path, name: str) -> None:
    with pytest.raises(DownloadRefused):
        target_folder(tmp_path, name)


def test_a_taken_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(NameTaken):
        target_folder(tmp_path, "taken")
    (tmp_path / "link").symlink_to(tmp_path.parent)
    with pytest.raises(NameTaken):
        target_folder(tmp_path, "link")


def test_a_git_model_is_fetched_checked_and_installed(tmp_path: Path, tiny_model_dir: Path) -> None:
    url = git_repo(tmp_path / "repo", tiny_model_dir)
    models = tmp_path / "models"
    models.mkdir()
    stages, lines = [], []
    info = Download(parse_source(url), "fetched", models, tmp_path / "work",
                    on_progress=lambda p: stages.append(p.stage), on_log=lines.append).run()
    assert info.name == "fetched" and info.format == "safetensors" and info.parameters
    assert (models / "fetched" / "config.json").is_file() and not (models / "fetched" / ".git").exists()
    assert "fetching" in stages and stages[-1] == "installing"
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize(("extra", "message"), [
    ({"README.md": b"no model here"}, "not a model"),
    ({"config.json": b"{}", "model.safetensors": b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\n"},
     "git-lfs"),
])
def test_a_fetch_that_is_not_a_usable_model_is_not_installed(tmp_path: Path, extra: dict[str, bytes],
                                                            message: str) -> None:
    url = git_repo(tmp_path / "repo", extra=extra)
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(DownloadFailed, match=message):
        Download(parse_source(url), "broken", models, tmp_path / "work").run()
    assert list(models.iterdir()) == [] and not (tmp_path / "work").exists()


def test_a_fetch_holding_a_symbolic_link_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    url = git_repo(tmp_path / "repo", tiny_model_dir, links={"notes.txt": "/etc/passwd"})
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(DownloadFailed, match="symbolic link"):
        Download(parse_source(url), "linked", models, tmp_path / "work").run()
    assert list(models.iterdir()) == []


def test_cancel_stops_a_fetch_that_hangs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hub that accepts the connection and never answers: the fetch waits forever until cancelled."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
    monkeypatch.setenv("HF_HUB_ETAG_TIMEOUT", "600")
    models = tmp_path / "models"
    models.mkdir()
    download = Download(parse_source("someone/some-model"), "hung", models, tmp_path / "work")
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            download.run()
        except BaseException as exc:  # noqa: BLE001 (the test inspects it)
            outcome.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    connection, _ = listener.accept()  # the child process is fetching now
    began = time.monotonic()
    download.cancel()
    worker.join(timeout=10)
    connection.close()
    listener.close()
    assert not worker.is_alive() and time.monotonic() - began < 5
    assert len(outcome) == 1 and isinstance(outcome[0], DownloadCancelled)
    assert list(models.iterdir()) == [] and not (tmp_path / "work").exists()


def test_a_hugging_face_repo_is_fetched_through_the_hub_api(tmp_path: Path, tiny_model_dir: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Through `huggingface_hub` against a fake hub at `HF_ENDPOINT` (the way a mirror is used)."""
    from tests.support.fake_hub import FakeHub

    hub = FakeHub("tiny-org/tiny-llama", tiny_model_dir)
    monkeypatch.setenv("HF_ENDPOINT", hub.start())
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    try:
        models = tmp_path / "models"
        models.mkdir()
        progress, lines = [], []
        info = Download(parse_source("tiny-org/tiny-llama"), "from-hub", models, tmp_path / "work",
                        on_progress=progress.append, on_log=lines.append).run()
        assert info.format == "safetensors" and info.parameters
        installed = models / "from-hub"
        assert sorted(p.name for p in installed.iterdir()) == sorted(hub.files)  # its own caches are left behind
        assert any(p.bytes_total == sum(map(len, hub.files.values())) for p in progress)
        with pytest.raises(DownloadFailed, match="fetch failed"):
            Download(parse_source("tiny-org/missing"), "nothing", models, tmp_path / "work2",
                     on_log=lines.append).run()
        assert any("not found" in line.lower() for line in lines)
    finally:
        hub.stop()


SECRET = "s3cret-token-4242"


def test_credentials_in_a_git_url_reach_git_and_nowhere_else(tmp_path: Path, tiny_model_dir: Path) -> None:
    """A private repository on a host that wants a password: the clone works with the URL's credentials, and the
    URL that is kept, logged and shown has none."""
    (tmp_path / "served").mkdir()
    host = FakeGitHost(tmp_path / "served", "alice", SECRET)
    path = host.add("private", git_repo(tmp_path / "repo", tiny_model_dir))
    base = host.start()
    try:
        url = base.replace("http://", f"http://alice:{SECRET}@") + path
        source = parse_source(url)
        assert source.location == base + path and SECRET not in repr(source)
        models = tmp_path / "models"
        models.mkdir()
        lines: list[str] = []
        try:
            info = Download(source, "private", models, tmp_path / "work", on_log=lines.append).run()
        except DownloadFailed as exc:
            raise AssertionError(f"{exc.message}: {lines}, {host.authorizations}") from exc
        assert info.format == "safetensors"
        assert host.expected in host.authorizations, "git was given the URL's credentials"
        wrong = base.replace("http://", "http://alice:not-the-password@") + path
        with pytest.raises(DownloadFailed, match="fetch failed") as failed:
            Download(parse_source(wrong), "refused", models, tmp_path / "work2", on_log=lines.append).run()
        assert lines and not any(SECRET in line or "not-the-password" in line for line in lines), lines
        assert "not-the-password" not in failed.value.message
    finally:
        host.stop()


def test_the_fetcher_gets_a_minimal_environment_without_the_servers_secrets(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real git, behind a wrapper on PATH that writes down the environment it was started with."""
    real_git = shutil.which("git")
    assert real_git is not None
    wrappers, dump = tmp_path / "bin", tmp_path / "git-env"
    wrappers.mkdir()
    (wrappers / "git").write_text(f'#!/bin/sh\nenv -0 > "{dump}"\nexec "{real_git}" "$@"\n')
    (wrappers / "git").chmod(0o755)
    secrets = {"LLMWS_SECRET_KEY": "server-secret-key-value", "LLMWS_DATABASE_URL": "postgresql://u:dbpass@h/db",
               "AWS_SECRET_ACCESS_KEY": "aws-secret-value", "HF_TOKEN": "hf-token-of-the-server-user"}
    for name, value in secrets.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PATH", f"{wrappers}{os.pathsep}{os.environ['PATH']}")
    models = tmp_path / "models"
    models.mkdir()
    url = git_repo(tmp_path / "repo", tiny_model_dir)
    Download(parse_source(url), "fetched", models, tmp_path / "work", hf_token="configured-hf-token").run()

    env = dict(entry.split("=", 1) for entry in dump.read_text().split("\0") if "=" in entry)
    assert not [name for name in env if name.startswith(("LLMWS_", "AWS_")) or name == "HF_TOKEN"], sorted(env)
    assert not [name for name, value in env.items() if any(secret in value for secret in [
        *secrets.values(), "configured-hf-token"])]
    assert Path(env["HOME"]).is_relative_to(tmp_path / "work") and env["HOME"] != os.environ.get("HOME")
    assert env["GIT_TERMINAL_PROMPT"] == "0" and env["PATH"] == os.environ["PATH"]


def test_a_download_past_the_size_cap_is_stopped_failed_and_leaves_nothing(
    tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From the hub, which announces the size; and from git, which does not: it is measured on disk."""
    from tests.support.fake_hub import FakeHub

    hub = FakeHub("tiny-org/tiny-llama", tiny_model_dir)
    monkeypatch.setenv("HF_ENDPOINT", hub.start())
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    models = tmp_path / "models"
    models.mkdir()
    total = sum(map(len, hub.files.values()))
    try:
        lines: list[str] = []
        with pytest.raises(DownloadTooLarge, match=f"cap of {total // 2} bytes"):
            Download(parse_source("tiny-org/tiny-llama"), "too-big", models, tmp_path / "work",
                     max_bytes=total // 2, on_log=lines.append).run()
        assert any("larger than the cap" in line for line in lines)
    finally:
        hub.stop()
    with pytest.raises(DownloadTooLarge):
        Download(parse_source(git_repo(tmp_path / "repo", tiny_model_dir)), "too-big", models, tmp_path / "work2",
                 max_bytes=total // 2).run()
    assert list(models.iterdir()) == [] and not (tmp_path / "work").exists() and not (tmp_path / "work2").exists()
    Download(parse_source((tmp_path / "repo").as_uri()), "fits", models, tmp_path / "work3",
             max_bytes=total * 4).run()
    assert (models / "fits" / "config.json").is_file()


def test_a_download_that_would_leave_too_little_free_space_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    url = git_repo(tmp_path / "repo", tiny_model_dir)
    with pytest.raises(InsufficientStorage, match="not enough free disk space"):
        Download(parse_source(url), "no-room", models, tmp_path / "work",
                 min_free_bytes=free_bytes(tmp_path) + 2**50).run()
    assert list(models.iterdir()) == [] and not (tmp_path / "work").exists()
