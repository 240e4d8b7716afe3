"""`llmws models ...`: list what the registry finds, fetch the demo model, convert a GGUF once."""

from __future__ import annotations

import argparse
from pathlib import Path

from api.settings import Settings


def add_model_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    models = commands.add_parser("models", help="local models").add_subparsers(title="models commands")
    models.add_parser("list", help="list the models found in the model folders").set_defaults(handler=_list)
    models.add_parser("pull-demo", help="fetch the demo model (SmolLM2-135M-Instruct) into the first model folder"
                      ).set_defaults(handler=_pull_demo)
    convert = models.add_parser("convert", help="convert a GGUF model to safetensors in the cache, once")
    convert.add_argument("name", help="a model name from `llmws models list`, or a path to a .gguf file")
    convert.set_defaults(handler=_convert)


def _list(settings: Settings, _args: argparse.Namespace) -> int:
    from engine.registry import scan, select

    models = scan(settings.model_dirs)
    chosen = select(models, settings.default_model, settings.model_dirs[0] if settings.model_dirs else None)
    if not models:
        print(f"no models in {', '.join(map(str, settings.model_dirs))}; try `llmws models pull-demo`")
        return 0
    print(f"  {'name':<32} {'format':<12} {'arch':<18} {'params':>8} {'size':>9} {'context':>8} dtype")
    for model in models:
        params = f"{model.parameters / 1e6:.0f}M" if model.parameters else "?"
        print(f"{'*' if model == chosen else ' '} {model.name:<32} {model.format:<12} {model.architecture or '?':<18} "
              f"{params:>8} {model.size_bytes / 2**20:>7.0f}MB {model.context_length or '?':>8} {model.dtype or '?'}")
    return 0


def _pull_demo(settings: Settings, _args: argparse.Namespace) -> int:
    from engine.demo_model import pull_demo

    path = pull_demo(settings.model_dirs[0] if settings.model_dirs else Path("models"))
    print(f"demo model at {path}")
    return 0


def _convert(settings: Settings, args: argparse.Namespace) -> int:
    from api.cli import CommandError
    from engine.loader import converted_folder
    from engine.registry import scan

    path = Path(args.name)
    if not path.is_file():
        matches = [model.path for model in scan(settings.model_dirs) if model.name == args.name]
        if not matches:
            raise CommandError(f"no model named {args.name!r}; see `llmws models list`")
        path = matches[0]
    if path.suffix != ".gguf":
        raise CommandError(f"{path} is not a GGUF file; safetensors folders load as they are")
    print(f"converted: {converted_folder(path, settings.model_cache_dir)}")
    return 0
