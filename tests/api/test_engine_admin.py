"""The engine inside the app: loaded in the lifespan, probed by /readyz, and managed through /admin."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from transformers import JambaConfig, JambaForCausalLM, PreTrainedTokenizerBase

from api.settings import Settings
from engine.requests import GenerationRequest, SamplingParams
from tests.api.conftest import assert_error
from tests.conftest import ADMIN_PASSWORD, make_settings
from tests.support.access import bearer, login
from tests.support.in_process import client_from, running_app


@pytest.fixture
def models_dir(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """A model folder with two copies of the tiny model, to switch between."""
    folder = tmp_path / "models"
    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(tiny_model_dir, folder / name)
    return folder


@pytest.fixture
def settings(tmp_path: Path, database_url: str, models_dir: Path) -> Settings:
    return make_settings(tmp_path / "var", database_url, model_dirs=[models_dir], default_model="tiny-a")


@pytest.fixture
def model_loaded() -> bool:
    return True  # these tests generate with the local model: `app` waits for it


async def test_readyz_probes_the_loaded_model(client: httpx.AsyncClient, admin_token: str) -> None:
    ready = await client.get("/readyz", headers=bearer(admin_token))
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"]["engine"] == {"ok": True, "detail": "generated a token", "model": "tiny-a"}


async def test_only_admins_see_where_the_model_lies_on_disk(client: httpx.AsyncClient, admin_token: str,
                                                           user_token: str) -> None:
    for path in ("/v1/models", "/v1/models/tiny-a"):
        user_view = (await client.get(path, headers=bearer(user_token))).json()
        admin_view = (await client.get(path, headers=bearer(admin_token))).json()
        user_card, admin_card = (view["data"][0] if "data" in view else view for view in (user_view, admin_view))
        assert user_card["metadata"]["max_context"] > 0 and "source" not in user_card["metadata"]
        assert admin_card["metadata"]["source"].endswith("tiny-a")
        assert str(Path(admin_card["metadata"]["source"]).parent) not in str(user_view)


async def test_resources_report_the_model_and_its_choices(client: httpx.AsyncClient, admin_token: str) -> None:
    body = (await client.get("/admin/resources", headers=bearer(admin_token))).json()
    model = body["model"]
    assert model["name"] == "tiny-a" and model["device"] == "cpu" and model["dtype"] == "float32"
    assert model["attention"] == "sdpa" and 0 < model["max_context"] <= 512
    assert model["weights"] == "float32" and model["weight_bytes"] > 0  # LLMWS_CPU_WEIGHTS=auto on this CPU
    assert body["engine"]["running"] == 0 and body["cpu"]["memory_total_bytes"] > 0
    assert body["gpus"] == []
    listed = (await client.get("/admin/engine/models", headers=bearer(admin_token))).json()["data"]
    assert {(entry["name"], entry["loaded"]) for entry in listed} == {("tiny-a", True), ("tiny-b", False)}


async def test_switch_and_unload(client: httpx.AsyncClient, admin_token: str) -> None:
    switched = await client.post("/admin/engine/switch", json={"model": "tiny-b"}, headers=bearer(admin_token))
    assert switched.status_code == 200, switched.text
    assert switched.json()["model"]["name"] == "tiny-b"
    assert [stage["stage"] for stage in switched.json()["progress"]] == ["unloading", "loading tiny-b",
                                                                         "serving tiny-b"]
    missing = await client.post("/admin/engine/switch", json={"model": "nope"}, headers=bearer(admin_token))
    assert_error(missing, 404, "model_not_found")
    audited = (await client.get("/admin/audit", params={"action": "local_model.switched"},
                                headers=bearer(admin_token))).json()["data"]
    assert [(entry["subject"], entry["detail"]["from"], entry["ip"]) for entry in audited] == [
        ("tiny-b", "tiny-a", "203.0.113.7")]  # the refused switch to a missing model changed nothing: not audited
    assert (await client.post("/admin/engine/unload", headers=bearer(admin_token))).status_code == 204
    ready = await client.get("/readyz", headers=bearer(admin_token))
    assert ready.status_code == 503 and ready.json()["checks"]["engine"]["detail"] == "the model was unloaded"


async def test_switch_is_refused_while_requests_run(app: FastAPI, client: httpx.AsyncClient,
                                                    admin_token: str) -> None:
    engine = app.state.services.model_host.engine()
    # Eight long requests keep the batch busy for seconds; the switch request takes milliseconds.
    params = SamplingParams(temperature=0, max_tokens=engine.max_context - 8, ignore_eos=True)
    streams = [engine.generate(GenerationRequest(prompt_ids=[1, 2, 3], sampling=params)) for _ in range(8)]
    for stream in streams:
        await anext(stream)
    busy = await client.post("/admin/engine/switch", json={"model": "tiny-b"}, headers=bearer(admin_token))
    assert_error(busy, 409, "engine_busy")
    for stream in streams:
        await stream.aclose()
    assert app.state.services.model_host.loaded.info.name == "tiny-a"


async def test_metrics_include_the_engine(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    assert "llmws_engine_model_loaded 1.0" in text
    assert "llmws_engine_queue_depth 0.0" in text and "llmws_engine_max_context_tokens" in text


async def test_deleting_a_local_model_is_for_admins_and_never_the_loaded_one(
        client: httpx.AsyncClient, admin_token: str, user_token: str, models_dir: Path) -> None:
    async def on_disk() -> list[str]:
        return sorted(await asyncio.to_thread(lambda: [entry.name for entry in models_dir.iterdir()]))

    refused = await client.delete("/admin/engine/models/tiny-b", headers=bearer(user_token))
    assert_error(refused, 403)
    in_use = await client.delete("/admin/engine/models/tiny-a", headers=bearer(admin_token))
    assert_error(in_use, 409, "model_in_use")
    # ".." arrives as the name itself (percent-encoded, so no client folds it away): only names the scan lists
    # can be deleted, so nothing above the model folder can be reached.
    escaping = await client.delete("/admin/engine/models/%2E%2E", headers=bearer(admin_token))
    assert_error(escaping, 404, "model_not_found")
    assert await on_disk() == ["tiny-a", "tiny-b"]

    deleted = await client.delete("/admin/engine/models/tiny-b", headers=bearer(admin_token))
    assert deleted.status_code == 204, deleted.text
    assert await on_disk() == ["tiny-a"]
    audited = (await client.get("/admin/audit", params={"action": "local_model.deleted"},
                                headers=bearer(admin_token))).json()["data"]
    assert [(entry["subject"], entry["detail"]["path"]) for entry in audited] == [
        ("tiny-b", str((models_dir / "tiny-b").resolve()))]
    listed = (await client.get("/admin/engine/models", headers=bearer(admin_token))).json()["data"]
    assert [entry["name"] for entry in listed] == ["tiny-a"]


async def test_a_model_the_engine_cannot_batch_is_refused_and_the_current_one_keeps_serving(
    app: FastAPI, client: httpx.AsyncClient, admin_token: str, models_dir: Path, tokenizer: PreTrainedTokenizerBase
) -> None:
    hybrid = JambaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, attn_layer_period=2, attn_layer_offset=1)
    JambaForCausalLM(hybrid).save_pretrained(models_dir / "tiny-hybrid")
    tokenizer.save_pretrained(models_dir / "tiny-hybrid")
    refused = await client.post("/admin/engine/switch", json={"model": "tiny-hybrid"}, headers=bearer(admin_token))
    error = assert_error(refused, 400, "unsupported_model")
    assert "cannot batch" in error["message"] and "LinearAttentionLayer" in error["message"]
    assert app.state.services.model_host.metadata()["name"] == "tiny-a"
    assert (await client.get("/readyz")).status_code == 200


async def test_a_download_that_would_fill_the_disk_is_refused_before_it_starts(
    tmp_path: Path, database_url: str
) -> None:
    """More free space asked for than any disk has: 507 ``insufficient_storage``, and no job."""
    settings = make_settings(tmp_path / "var", database_url, download_min_free_bytes=2**60)
    async with running_app(settings) as application:
        async with client_from(application) as client:
            token = await login(client, "admin", ADMIN_PASSWORD)
            refused = await client.post("/admin/engine/downloads", headers=bearer(token),
                                        json={"source": "someone/some-model"})
            assert "not enough free disk space" in assert_error(refused, 507, "insufficient_storage")["message"]
            listed = await client.get("/admin/engine/downloads", headers=bearer(token))
            assert listed.json()["data"] == []
