"""The launch templates runners may use, and the validation that turns an admin's request into an argument list.

Nothing an admin sends becomes a command by itself: the executable and every flag come from a template, the model
must be a path inside a scanned model folder, numbers are numbers, and extra arguments are names from the
template's fixed set. The result is an argument list for `subprocess` (never a shell), shown before launch.
"""

from __future__ import annotations

import shlex
import shutil
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from api.services.errors import InvalidInput


@dataclass(frozen=True)
class Template:
    name: str
    description: str
    executable: tuple[str, ...]  # the argument list's start; its first item is looked up on PATH
    model: tuple[str, ...]  # how the model path is passed ({model} is replaced)
    port: tuple[str, ...] = ("--port", "{port}")
    host: tuple[str, ...] = ("--host", "127.0.0.1")
    context: tuple[str, ...] | None = None
    gpu_layers: tuple[str, ...] | None = None
    extras: dict[str, tuple[str, ...]] = field(default_factory=dict)  # allowed extra arguments, by name
    kind: str = "openai-compatible"  # the provider kind it registers as

    def available(self) -> bool:
        return Path(self.executable[0]).is_file() or shutil.which(self.executable[0]) is not None


def _llmws() -> tuple[str, ...]:
    return (str(Path(sys.executable).with_name("llmws")), "serve")


BUILT_IN: dict[str, Template] = {template.name: template for template in (
    Template("llmws", "another LLMWS serving one local model (its own SQLite database under the runner's folder)",
             _llmws(), model=(), host=(), port=("--port", "{port}")),
    Template("llama-cpp-python", "llama-cpp-python's OpenAI server for a GGUF file",
             (sys.executable, "-m", "llama_cpp.server"), model=("--model", "{model}"),
             context=("--n_ctx", "{context}"), gpu_layers=("--n_gpu_layers", "{gpu_layers}"),
             extras={"flash-attn": ("--flash_attn", "true")}),
    Template("llama-server", "llama.cpp's llama-server for a GGUF file", ("llama-server",),
             model=("--model", "{model}"), context=("--ctx-size", "{context}"),
             gpu_layers=("--n-gpu-layers", "{gpu_layers}"), extras={"flash-attn": ("--flash-attn",),
                                                                    "no-mmap": ("--no-mmap",)}, kind="llama.cpp"),
    Template("vllm", "vLLM's OpenAI server for a safetensors model folder", ("vllm", "serve"), model=("{model}",),
             context=("--max-model-len", "{context}"), extras={"enforce-eager": ("--enforce-eager",),
                                                               "trust-remote-code": ("--trust-remote-code",)},
             kind="vllm"),
)}


@dataclass(frozen=True)
class LaunchPlan:
    template: Template
    argv: list[str]
    model: Path
    port: int

    @property
    def command(self) -> str:
        return shlex.join(self.argv)


def plan(templates: dict[str, Template], template_name: str, model: str, port: int, model_dirs: list[Path], *,
         context: int | None = None, gpu_layers: int | None = None, extras: list[str] | None = None) -> LaunchPlan:
    template = templates.get(template_name)
    if template is None:
        raise InvalidInput(f"unknown template {template_name!r}; allowed: {', '.join(sorted(templates))}",
                           param="template")
    if not template.available():
        raise InvalidInput(f"the {template_name} template's program is not installed here", param="template")
    model_path = model_inside(model, model_dirs)
    if not 1024 <= port <= 65535:
        raise InvalidInput("port must be between 1024 and 65535", param="port")
    values = {"model": str(model_path), "port": str(port), "context": str(context), "gpu_layers": str(gpu_layers)}
    argv = [*template.executable, *_filled(template.model, values), *template.host,
            *_filled(template.port, values)]
    for name, value, pieces in (("context", context, template.context), ("gpu_layers", gpu_layers,
                                                                          template.gpu_layers)):
        if value is None:
            continue
        if pieces is None:
            raise InvalidInput(f"the {template_name} template takes no {name}", param=name)
        argv += _filled(pieces, values)
    for extra in extras or []:
        if extra not in template.extras:
            raise InvalidInput(f"extra argument {extra!r} is not allowed; allowed: "
                               f"{', '.join(sorted(template.extras)) or 'none'}", param="extras")
        argv += list(template.extras[extra])
    return LaunchPlan(template, argv, model_path, port)


def model_inside(model: str, model_dirs: list[Path]) -> Path:
    """A model path (or a model folder's or file's name) that resolves inside one of the scanned folders."""
    if not model or "\x00" in model:
        raise InvalidInput("model is required", param="model")
    for folder in model_dirs:
        root = folder.resolve()
        candidate = (root / model).resolve()
        if candidate != root and candidate.is_relative_to(root) and candidate.exists():
            return candidate
    raise InvalidInput("model must name a model inside the model folders", param="model")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def enabled(names: list[str]) -> dict[str, Template]:
    """The built-in templates the operator allows (`LLMWS_RUNNER_TEMPLATES`)."""
    unknown = set(names) - set(BUILT_IN)
    if unknown:
        raise ValueError(f"unknown runner templates: {', '.join(sorted(unknown))}")
    return {name: BUILT_IN[name] for name in names}


def _filled(pieces: tuple[str, ...], values: dict[str, str]) -> list[str]:
    return [piece.format(**values) for piece in pieces]
