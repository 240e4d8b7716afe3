"""View state of the local side of the models page: the models on disk (load, delete after a confirmation) and a
model download followed until it ends.

Plain ``param`` classes over the ``ApiClient`` (they raise its ``ApiError``), tested against the real API without
a browser; the page polls ``DownloadState.poll`` from a periodic callback.
"""

from __future__ import annotations

from typing import Any

import param

from ui.client import ApiClient, ApiError

Json = dict[str, Any]
FINISHED = ("completed", "failed", "cancelled")


def _size(size_bytes: int | None) -> str:
    if not size_bytes:
        return ""
    for unit in ("B", "KB", "MB", "GB"):
        if size_bytes < 1024 or unit == "GB":
            return f"{size_bytes:.0f} {unit}" if unit == "B" else f"{size_bytes:.1f} {unit}"
        size_bytes /= 1024
    return ""


class LocalModelsState(param.Parameterized):
    """The models in the model folders, which one is loaded, and a delete waiting for its confirmation."""

    rows = param.List(default=[])
    pending_delete = param.String(default=None, allow_None=True, doc="Asked to delete; not yet confirmed.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    def refresh(self) -> None:
        self.rows = self.client.local_models()["data"]

    @property
    def names(self) -> list[str]:
        return [row["name"] for row in self.rows]

    @property
    def loaded(self) -> str | None:
        return next((row["name"] for row in self.rows if row["loaded"]), None)

    def table(self) -> list[Json]:
        return [{"name": row["name"], "loaded": row["loaded"], "format": row["format"],
                 "architecture": row["architecture"] or "", "parameters": row["parameters"],
                 "size": _size(row["size_bytes"]), "context": row["context_length"], "dtype": row["dtype"] or "",
                 "folder": row["model_dir"]} for row in self.rows]

    def switch(self, name: str) -> Json:
        switched = self.client.switch_model(name)
        self.refresh()
        return switched

    def ask_delete(self, name: str) -> None:
        if name not in self.names:
            raise ApiError(404, f"no local model named {name!r}", "model_not_found")
        if name == self.loaded:
            raise ApiError(409, f"{name} is loaded; load another model first", "model_in_use")
        self.pending_delete = name

    def keep(self) -> None:
        self.pending_delete = None

    def confirm_delete(self) -> str:
        name = self.pending_delete
        if name is None:
            raise ApiError(400, "nothing to delete: choose a model first", "invalid_value")
        self.pending_delete = None
        self.client.delete_local_model(name)
        self.refresh()
        return name


class DownloadState(param.Parameterized):
    """One download at a time, started here and followed by polling its job until it ends."""

    source = param.String(default="", doc="A Hugging Face repo id (owner/name) or a git URL.")
    folder_name = param.String(default="", doc="The folder name under the download folder; empty: the repo's name.")
    job = param.Dict(default=None, allow_None=True, doc="The job as the API last described it.")

    def __init__(self, client: ApiClient, **params: Any) -> None:
        super().__init__(**params)
        self.client = client

    @property
    def running(self) -> bool:
        return self.job is not None and self.job["status"] not in FINISHED

    def start(self) -> Json:
        if self.running:
            raise ApiError(409, "a download is already running here; wait for it or cancel it", "conflict")
        self.job = self.client.start_download(self.source.strip(), self.folder_name.strip() or None)
        return self.job

    def poll(self) -> Json | None:
        if self.job is not None:
            self.job = self.client.download(self.job["id"])
        return self.job

    def cancel(self) -> Json:
        if not self.running:
            raise ApiError(409, "no download is running", "conflict")
        assert self.job is not None
        self.job = self.client.cancel_download(self.job["id"])
        return self.job

    @property
    def percent(self) -> int | None:
        """0–100, or None while the size is unknown (an indeterminate bar)."""
        if self.job is None:
            return 0
        if self.job["status"] == "completed":
            return 100
        percent = self.job.get("percent")
        return None if percent is None else max(0, min(100, int(percent)))

    def summary(self) -> str:
        job = self.job
        if job is None:
            return "No download started."
        parts = [f"**{job['status']}**", job.get("stage") or ""]
        if job.get("total_bytes"):
            parts.append(f"{_size(job['bytes'])} of {_size(job['total_bytes'])}")
        elif job.get("bytes"):
            parts.append(_size(job["bytes"]))
        if job.get("eta_s") and self.running:
            parts.append(f"about {int(job['eta_s'])} s left")
        model = job.get("model")
        if model:  # the installed model's description
            parts.append(f"model {model.get('name') if isinstance(model, dict) else model}")
        if job.get("error"):
            parts.append(f"error: {job['error']}")
        return f"{job['name'] or job['source']}: " + " · ".join(part for part in parts if part)
