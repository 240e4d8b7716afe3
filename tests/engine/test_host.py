"""The model host's disk side: deleting a model takes everything made from it along, and nothing else."""

from __future__ import annotations

from pathlib import Path

from engine.host import HostConfig, ModelHost
from engine.loader import COMPLETE_MARKER, choose_runtime, converted_path
from engine.registry import ModelInfo
from engine.tool_calls import Family


def converted_copy(folder: Path, made_from: Path | None) -> Path:
    """A cache folder as `converted_folder` leaves it (its marker names the GGUF; older markers are empty)."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / COMPLETE_MARKER).write_text(str(made_from.resolve()) if made_from else "")
    return folder


async def test_deleting_a_gguf_model_deletes_its_converted_copies_and_no_others(tmp_path: Path) -> None:
    # The files' contents do not matter to deleting (parsing a real GGUF's header takes seconds): what the scan
    # would report for a folder holding one GGUF is given as it would report it.
    models, cache = tmp_path / "models", tmp_path / "cache"
    gguf = models / "doomed" / "doomed.Q4_1.gguf"
    gguf.parent.mkdir(parents=True)
    gguf.write_bytes(b"GGUF" + bytes(64))
    elsewhere = tmp_path / "elsewhere" / "doomed.Q4_1.gguf"  # the same file name in another folder
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b"GGUF" + bytes(64))
    current = converted_copy(converted_path(gguf, cache), None)  # made before markers named their GGUF
    stale = converted_copy(cache / f"{gguf.stem}-0123456789abcdef", gguf)  # of an earlier version of the file
    other = converted_copy(converted_path(elsewhere, cache), elsewhere)
    host = ModelHost(HostConfig(model_dirs=[models], default_model=None, cache_dir=cache,
                                runtime=choose_runtime(force_cpu=True)))
    doomed = ModelInfo(name="doomed", path=gguf, format="gguf", size_bytes=68, model_dir=models,
                       architecture="llama", parameters=0, context_length=None, dtype="Q4_1")

    assert await host.delete(doomed) == models / "doomed"
    assert not (models / "doomed").exists() and not current.exists() and not stale.exists()
    assert other.is_dir() and elsewhere.is_file()


async def test_a_models_tool_parser_can_be_set_by_its_name(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The demo tokenizer's template has no tool support: its family is `hermes`, unless the host is told."""
    def host(tool_parsers: dict[str, Family]) -> ModelHost:
        return ModelHost(HostConfig(model_dirs=[tiny_model_dir.parent], default_model="tiny-llama",
                                    cache_dir=tmp_path / "cache", runtime=choose_runtime(force_cpu=True),
                                    tool_parsers=tool_parsers))

    for tool_parsers, family in (({}, "hermes"), ({"tiny-llama": "llama3"}, "llama3"), ({"other": "json"}, "hermes")):
        served = host(tool_parsers)
        await served.start()
        try:
            assert served.local is not None and served.local.tool_format.family == family, tool_parsers
        finally:
            await served.close()
