"""Finding models on disk: folders with `config.json` + safetensors, and `.gguf` files, with what they are."""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal

log = logging.getLogger(__name__)

ModelFormat = Literal["safetensors", "gguf"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    format: ModelFormat
    architecture: str | None
    parameters: int | None
    size_bytes: int
    context_length: int | None
    dtype: str | None  # the stored dtype, or the GGUF quantization type
    model_dir: Path  # which of the scanned folders it was found in


def scan(model_dirs: list[Path]) -> list[ModelInfo]:
    """Every model in the folders, in folder order then by name. Unreadable candidates are logged and skipped."""
    found: list[ModelInfo] = []
    for model_dir in model_dirs:
        if not model_dir.is_dir():
            continue
        for candidate in sorted(model_dir.iterdir()):
            try:
                info = describe(candidate, model_dir)
            except Exception as exc:  # noqa: BLE001 (one bad file must not hide the others)
                log.warning("skipping %s: %s", candidate, exc)
                continue
            if info is not None:
                found.append(info)
    return found


def select(models: list[ModelInfo], default: str | None, preferred_dir: Path | None) -> ModelInfo | None:
    """The seed's rule: one model, that one; several, the configured default, else the first in `models/`."""
    if not models:
        return None
    if default:
        for model in models:
            if default in (model.name, str(model.path)):
                return model
        log.warning("default model %r not found; choosing another", default)
    if len(models) > 1 and preferred_dir is not None:
        for model in models:
            if model.model_dir.resolve() == preferred_dir.resolve():
                return model
    return models[0]


def find(models: list[ModelInfo], reference: str) -> ModelInfo | None:
    """The model ``reference`` names: its name, or a path to it as the seed's clients send one (``models/<name>``:
    the trailing parts of its path, or the whole path). Only ever one of ``models`` (what a scan found): the
    reference is compared with their paths, never opened, so no reference reaches outside the model folders."""
    wanted = PurePosixPath(reference.replace("\\", "/")).parts
    if not wanted:
        return None
    for model in models:
        entry = model.model_dir / model.path.relative_to(model.model_dir).parts[0]  # the folder, or the file
        for location in {entry.resolve().parts, model.path.resolve().parts}:
            if (location == wanted if wanted[0] == "/" else location[-len(wanted):] == wanted):
                return model
    return next((model for model in models if model.name == reference), None)


def describe(candidate: Path, model_dir: Path) -> ModelInfo | None:
    """What one entry of a model folder is, or None when it is not a model; raises when it looks like one but
    does not read."""
    if candidate.is_dir():
        if (candidate / "config.json").is_file() and any(candidate.glob("*.safetensors")):
            return _describe_safetensors(candidate, model_dir)
        ggufs = sorted(candidate.glob("*.gguf"))
        # A folder holding one GGUF (as `models/SmolLM2-135M-Instruct/`) is named after the folder.
        return _describe_gguf(ggufs[0], model_dir, name=candidate.name) if len(ggufs) == 1 else None
    if candidate.suffix == ".gguf":
        return _describe_gguf(candidate, model_dir, name=candidate.stem)
    return None


def _describe_safetensors(folder: Path, model_dir: Path) -> ModelInfo:
    from safetensors import safe_open

    config = json.loads((folder / "config.json").read_text())
    parameters = 0
    for shard in folder.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open has no __iter__)
                shape = handle.get_slice(key).get_shape()
                count = 1
                for dim in shape:
                    count *= dim
                parameters += count
    return ModelInfo(
        name=folder.name, path=folder, format="safetensors",
        architecture=(config.get("architectures") or [None])[0], parameters=parameters,
        size_bytes=sum(file.stat().st_size for file in folder.iterdir() if file.is_file()),
        context_length=config.get("max_position_embeddings"),
        dtype=config.get("dtype") or config.get("torch_dtype"), model_dir=model_dir,
    )


def _describe_gguf(path: Path, model_dir: Path, *, name: str) -> ModelInfo:
    stat = path.stat()
    facts = _gguf_facts(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return ModelInfo(name=name, path=path, format="gguf", size_bytes=stat.st_size, model_dir=model_dir, **vars(facts))


@dataclass(frozen=True)
class _GgufFacts:
    architecture: str | None
    parameters: int
    context_length: int | None
    dtype: str | None


@functools.lru_cache(maxsize=64)
def _gguf_facts(path: str, size: int, mtime_ns: int) -> _GgufFacts:
    """What a GGUF's header says, read once per file version (size and mtime are in the key): the reader parses
    every field, the tokenizer's vocabulary included, which takes seconds, and every scan (start, `models list`, the
    admin's model list) would otherwise pay it again."""
    import gguf

    reader = gguf.GGUFReader(path)

    def field(key: str) -> object:
        value = reader.fields.get(key)
        return value.contents() if value is not None else None

    architecture = field("general.architecture")
    file_type = field("general.file_type")
    quantization = None
    if file_type is not None:
        try:
            quantization = gguf.LlamaFileType(int(file_type)).name.removeprefix("MOSTLY_")
        except ValueError:
            quantization = f"file_type {file_type}"
    context = field(f"{architecture}.context_length") if architecture else None
    return _GgufFacts(architecture=str(architecture) if architecture else None,
                      parameters=sum(int(tensor.n_elements) for tensor in reader.tensors),
                      context_length=int(context) if context is not None else None, dtype=quantization)
