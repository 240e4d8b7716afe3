"""Acceptance 1 of the engine: correctness against plain `model.generate`, batching, limits and cancellation."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import pytest
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase

from engine.errors import ContextTooLong, EngineError, InvalidParameters, Overloaded
from engine.local import LocalEngine
from engine.requests import FinishEvent, GenerationRequest, SamplingParams, TokenEvent
from engine.text_stream import TextStream
from tests.engine.conftest import ON_GPU, finish_of, greedy, reference_ids, run, text_of, tiny_engine_on
from tests.support.engine import prompts, wait_for_empty_batch


@pytest.fixture(params=["cpu", "cpu-static", pytest.param("cuda", marks=ON_GPU),
                        pytest.param("cuda-transformers", marks=ON_GPU)])
async def tiny_engine(request: pytest.FixtureRequest, tiny_model: LlamaForCausalLM,
                      tokenizer: PreTrainedTokenizerBase) -> AsyncIterator[LocalEngine]:
    """The same checks with each decode path: transformers' forward and the static step (engine/static_decode.py)
    on the CPU; on a GPU, where there is one, the static step replayed from CUDA graphs (the default there) and
    transformers' forward. In float32 everywhere, so greedy output compares token for token (tests/engine/
    test_cuda.py covers bf16)."""
    device, _, forced = request.param.partition("-")
    model = tiny_model if device == "cpu" else copy.deepcopy(tiny_model).to(device)
    engine = tiny_engine_on(model, tokenizer, decode=forced or "auto")  # type: ignore[arg-type]
    assert engine.scheduler.decode == {"cpu": "transformers", "cpu-static": "static", "cuda": "graphs",
                                       "cuda-transformers": "transformers"}[request.param]
    yield engine
    engine.close()


async def test_greedy_equals_model_generate_alone(tiny_engine: LocalEngine,
                                                  tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = prompts(tokenizer, 1)[0]
    events = await run(tiny_engine, prompt_ids=prompt, sampling=greedy(40))
    assert list(finish_of(events).output_ids) == reference_ids(tiny_engine.model, prompt, 40)


async def test_greedy_equals_model_generate_inside_a_mixed_batch_of_16(
    tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    batch = prompts(tokenizer, 16)
    mixed = [greedy(12 + 3 * i) if i % 2 == 0 else SamplingParams(temperature=0.9, top_p=0.9, top_k=50, seed=i,
                                                                    max_tokens=30, presence_penalty=0.5)
             for i in range(16)]
    results = await asyncio.gather(*(run(tiny_engine, prompt_ids=p, sampling=s) for p, s in zip(batch, mixed,
                                                                                                strict=True)))
    for i in range(0, 16, 2):
        assert list(finish_of(results[i]).output_ids) == reference_ids(tiny_engine.model, batch[i], 12 + 3 * i), i
    assert all(finish_of(result).finish_reason in ("stop", "length") for result in results)


async def test_stop_string_ends_the_text_before_it(tiny_engine: LocalEngine,
                                                   tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = prompts(tokenizer, 3)[2]
    full = text_of(await run(tiny_engine, prompt_ids=prompt, sampling=greedy(40, ignore_eos=True)))
    stop = full[len(full) // 2: len(full) // 2 + 4]
    assert stop.strip()
    events = await run(tiny_engine, prompt_ids=prompt, sampling=greedy(40, ignore_eos=True, stop=(stop,)))
    assert text_of(events) == full[: full.index(stop)]
    assert finish_of(events).finish_reason == "stop"
    # The stop string never reaches the stream, not even in part across events.
    assert all(stop not in event.text for event in events if isinstance(event, TokenEvent))


async def test_max_tokens_ends_with_length(tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase) -> None:
    events = await run(tiny_engine, prompt_ids=prompts(tokenizer, 1)[0], sampling=greedy(7, ignore_eos=True))
    finish = finish_of(events)
    assert finish.finish_reason == "length"
    assert finish.usage.completion_tokens == 7 and len(finish.output_ids) == 7
    assert finish.usage.prompt_tokens == len(prompts(tokenizer, 1)[0])


async def test_seed_reproduces_a_sample(tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = prompts(tokenizer, 1)[0]

    def sampled(seed: int) -> SamplingParams:
        return SamplingParams(temperature=1.0, seed=seed, max_tokens=20, ignore_eos=True)

    first = finish_of(await run(tiny_engine, prompt_ids=prompt, sampling=sampled(42))).output_ids
    again = finish_of(await run(tiny_engine, prompt_ids=prompt, sampling=sampled(42))).output_ids
    other = finish_of(await run(tiny_engine, prompt_ids=prompt, sampling=sampled(43))).output_ids
    assert first == again
    assert first != other


async def test_n_returns_independent_choices(tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase) -> None:
    params = SamplingParams(temperature=1.0, seed=5, n=2, max_tokens=15, ignore_eos=True)
    events = await run(tiny_engine, prompt_ids=prompts(tokenizer, 1)[0], sampling=params)
    finishes = [event for event in events if isinstance(event, FinishEvent)]
    assert sorted(finish.index for finish in finishes) == [0, 1]
    assert finish_of(events, 0).output_ids != finish_of(events, 1).output_ids


async def test_64_concurrent_requests_all_finish(tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase) -> None:
    batch = prompts(tokenizer, 64)
    results = await asyncio.gather(*(run(tiny_engine, prompt_ids=p, sampling=greedy(10, ignore_eos=True))
                                     for p in batch))
    assert [finish_of(result).usage.completion_tokens for result in results] == [10] * 64
    assert tiny_engine.stats().running == 0


async def test_a_request_joining_mid_batch_does_not_wait_for_the_long_ones(
    tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    order: list[str] = []

    async def tracked(name: str, prompt: list[int], params: SamplingParams, started: asyncio.Event | None) -> None:
        async for event in tiny_engine.generate(GenerationRequest(prompt_ids=prompt, sampling=params)):
            if isinstance(event, TokenEvent) and started is not None:
                started.set()
            if isinstance(event, FinishEvent):
                order.append(name)

    batch = prompts(tokenizer, 5)
    running = asyncio.Event()
    long_ones = [asyncio.create_task(tracked(f"long{i}", batch[i], greedy(300, ignore_eos=True),
                                             running if i == 0 else None)) for i in range(4)]
    await running.wait()
    await tracked("short", batch[4], greedy(3, ignore_eos=True), None)
    assert order == ["short"], "the short request finished only after a long one"
    await asyncio.gather(*long_ones)


async def test_cancel_ends_the_stream_and_frees_the_slot(tiny_engine: LocalEngine,
                                                         tokenizer: PreTrainedTokenizerBase) -> None:
    request = GenerationRequest(prompt_ids=prompts(tokenizer, 1)[0], sampling=greedy(400, ignore_eos=True))
    received = []
    async for event in tiny_engine.generate(request):
        received.append(event)
        if len(received) == 3:
            tiny_engine.abort(request.request_id)
    finish = received[-1]
    assert isinstance(finish, FinishEvent) and finish.finish_reason == "cancelled"
    assert finish.usage.completion_tokens < 400
    await wait_for_empty_batch(tiny_engine)


async def test_a_consumer_that_stops_reading_cancels_its_request(
    tiny_engine: LocalEngine, tokenizer: PreTrainedTokenizerBase
) -> None:
    stream = tiny_engine.generate(GenerationRequest(prompt_ids=prompts(tokenizer, 1)[0],
                                                    sampling=greedy(400, ignore_eos=True)))
    await anext(stream)
    await stream.aclose()
    await wait_for_empty_batch(tiny_engine)


async def test_a_prompt_over_the_context_is_refused_before_any_work(tiny_engine: LocalEngine) -> None:
    steps = tiny_engine.scheduler.stats().steps
    with pytest.raises(ContextTooLong) as refused:
        await run(tiny_engine, prompt_ids=[5] * 600, sampling=greedy(4))
    assert refused.value.input_tokens == 600 and refused.value.max_context == 512
    assert tiny_engine.scheduler.stats().steps == steps


async def test_a_small_request_is_answered_while_a_1_mib_prompt_is_being_tokenized(tiny_engine: LocalEngine) -> None:
    """Tokenizing a 1 MiB chat prompt takes seconds; on the event loop it held up every other request (and the
    server's /healthz) that long."""
    huge = [{"role": "user", "content": "hello world, " * (1024 * 1024 // 13)}]
    tokenizing = asyncio.create_task(run(tiny_engine, messages=huge, sampling=greedy(1)))
    await asyncio.sleep(0)  # the huge request starts first
    small = await run(tiny_engine, messages=[{"role": "user", "content": "hi"}], sampling=greedy(4, ignore_eos=True))
    assert finish_of(small).usage.completion_tokens == 4
    assert not tokenizing.done()  # the small one was answered while the huge one was still being tokenized
    with pytest.raises(ContextTooLong):  # (and then it is refused: it does not fit the tiny model)
        await tokenizing


@pytest.mark.parametrize(("field", "value"), [("temperature", -0.1), ("top_p", 1.5), ("max_tokens", 0),
                                              ("top_k", -1), ("n", 0), ("presence_penalty", 3.0)])
def test_bad_parameters_are_refused_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(InvalidParameters) as refused:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert refused.value.param == field and field in refused.value.message


async def test_the_queue_is_bounded(tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase) -> None:
    engine = LocalEngine(tiny_model, tokenizer, max_context=512, max_batch_size=1, max_queue=2)
    requests = [GenerationRequest(prompt_ids=[1, 2, 3], sampling=greedy(500, ignore_eos=True)) for _ in range(4)]

    async def drain(request: GenerationRequest) -> None:
        async for _ in engine.generate(request):
            pass

    try:
        running = engine.generate(requests[0])
        await anext(running)  # admitted to the queue
        for _ in range(200):
            if engine.stats().running == 1:  # and now in the one batch slot
                break
            await asyncio.sleep(0.01)
        waiting = [asyncio.create_task(drain(request)) for request in requests[1:3]]
        for _ in range(200):
            if engine.stats().queue_depth == 2:
                break
            await asyncio.sleep(0.01)
        assert engine.stats().queue_depth == 2
        with pytest.raises(Overloaded):
            await anext(engine.generate(requests[3]))
        for request in requests:
            engine.abort(request.request_id)
        await asyncio.gather(*waiting)
        await running.aclose()
    finally:
        engine.close()


async def test_health_probe_generates(tiny_engine: LocalEngine) -> None:
    health = await tiny_engine.check_health()
    assert health.ok
    assert tiny_engine.scheduler.stats().steps >= 1


async def test_a_model_without_a_chat_template_gets_a_plain_layout(
    tiny_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase
) -> None:
    plain = copy.deepcopy(tokenizer)
    plain.chat_template = None
    engine = LocalEngine(tiny_model, plain, max_context=512)
    try:
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
        assert engine.encode_messages(messages) == plain.encode("System: Be brief.\nUser: Hi\nAssistant:")
        with pytest.raises(InvalidParameters):
            engine.encode_messages([])
    finally:
        engine.close()


async def test_out_of_vocabulary_prompt_ids_are_refused(tiny_engine: LocalEngine) -> None:
    with pytest.raises(InvalidParameters) as refused:
        await run(tiny_engine, prompt_ids=[1, 10**9], sampling=greedy(2))
    assert refused.value.param == "prompt_ids"


async def test_a_stopped_engine_refuses_new_work(tiny_model: LlamaForCausalLM,
                                                 tokenizer: PreTrainedTokenizerBase) -> None:
    engine = LocalEngine(tiny_model, tokenizer, max_context=512)
    engine.close()
    with pytest.raises(EngineError):
        await run(engine, prompt_ids=[1, 2, 3], sampling=greedy(2))


def test_the_earliest_stop_string_wins(tokenizer: PreTrainedTokenizerBase) -> None:
    stream = TextStream(tokenizer.backend_tokenizer, stop=("world", "lo w"))
    pieces = [stream.push(token) for token in tokenizer.encode("hello world", add_special_tokens=False)]
    assert "".join(piece.text for piece in pieces) == "hel"
    assert pieces[-1].stopped or any(piece.stopped for piece in pieces)
