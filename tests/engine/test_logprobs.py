"""Acceptance 5 of issue 17 on the engine: logprobs computed in the decode step, checked against the model's own
forward pass; tokens' exact bytes, for byte-level BPE (the demo tokenizer) and SentencePiece-style vocabularies."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator

import pytest
import torch
from tokenizers import Tokenizer, decoders, models
from transformers import LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from engine.local import LocalEngine
from engine.logprobs import TokenBytes
from engine.requests import EngineEvent, SamplingParams, TokenEvent, TokenLogprob
from tests.engine.conftest import ON_GPU, finish_of, greedy, run, text_of, tiny_engine_on
from tests.support.engine import prompts


@pytest.fixture(params=["transformers", "static", pytest.param("graphs", marks=ON_GPU)])
async def tiny_engine(request: pytest.FixtureRequest, tiny_model: LlamaForCausalLM,
                      tokenizer: PreTrainedTokenizerBase) -> AsyncIterator[LocalEngine]:
    """Each decode path: on the CPU transformers' forward and the static step; on a GPU the CUDA-graph replay
    (float32 everywhere, so the logprobs compare to 1e-4)."""
    model = copy.deepcopy(tiny_model).to("cuda") if request.param == "graphs" else tiny_model
    engine = tiny_engine_on(model, tokenizer, decode=request.param)
    yield engine
    engine.close()


def logprobs_of(events: list[EngineEvent], index: int = 0) -> list[TokenLogprob]:
    return [entry for e in events if isinstance(e, TokenEvent) and e.index == index for entry in e.logprobs]


def reference_logprobs(model: LlamaForCausalLM, prompt: list[int], output: list[int]) -> torch.Tensor:
    """log_softmax of the model's next-token logits after the prompt and each prefix of the output, computed
    here in one plain forward pass: row i is the distribution output[i] was chosen from."""
    with torch.inference_mode():
        logits = model(torch.tensor([prompt + output], device=model.device)).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), dim=-1).cpu()


async def test_greedy_logprobs_equal_the_models_own_log_softmax(tiny_engine: LocalEngine,
                                                                tokenizer: PreTrainedTokenizerBase) -> None:
    prompt = prompts(tokenizer, 3)[2]
    events = await run(tiny_engine, prompt_ids=prompt, sampling=greedy(20, logprobs=5, ignore_eos=True))
    output = list(finish_of(events).output_ids)
    entries = logprobs_of(events)
    assert [entry.token_id for entry in entries] == output  # one per generated token, in order
    reference = reference_logprobs(tiny_engine.model, prompt, output)
    for step, entry in enumerate(entries):
        assert entry.logprob == pytest.approx(float(reference[step, entry.token_id]), abs=1e-4)
        assert entry.logprob == pytest.approx(float(reference[step].max()), abs=1e-4)  # greedy: the likeliest
        expected = torch.topk(reference[step], 5)
        assert [top.logprob for top in entry.top] == pytest.approx(expected.values.tolist(), abs=1e-4)
        assert entry.top[0].token_id == entry.token_id  # the chosen token leads its own top list


async def test_top_logprobs_are_sorted_and_never_positive(tiny_engine: LocalEngine,
                                                          tokenizer: PreTrainedTokenizerBase) -> None:
    sampled = SamplingParams(temperature=1.0, seed=3, max_tokens=16, logprobs=20, ignore_eos=True)
    events = await run(tiny_engine, prompt_ids=prompts(tokenizer, 1)[0], sampling=sampled)
    entries = logprobs_of(events)
    assert len(entries) == 16
    for entry in entries:
        values = [top.logprob for top in entry.top]
        assert len(values) == 20
        assert values == sorted(values, reverse=True)
        assert all(value <= 0 for value in values) and entry.logprob <= 0
        assert entry.logprob <= values[0]


async def test_logprobs_zero_gives_the_chosen_token_alone(tiny_engine: LocalEngine,
                                                          tokenizer: PreTrainedTokenizerBase) -> None:
    events = await run(tiny_engine, prompt_ids=prompts(tokenizer, 1)[0], sampling=greedy(6, logprobs=0))
    entries = logprobs_of(events)
    assert entries and all(entry.top == () for entry in entries)


async def test_logprobs_ignore_temperature_and_follow_the_penalties(tiny_engine: LocalEngine,
                                                                   tokenizer: PreTrainedTokenizerBase) -> None:
    """Reported after the penalties (as sampled) but before the temperature: the same seed at another
    temperature may choose other tokens, yet each chosen token's logprob is the penalised model's own."""
    prompt = prompts(tokenizer, 2)[1]
    penalty = 0.8
    sampled = SamplingParams(temperature=1.7, seed=5, max_tokens=12, logprobs=2, presence_penalty=penalty,
                             ignore_eos=True)
    events = await run(tiny_engine, prompt_ids=prompt, sampling=sampled)
    output = list(finish_of(events).output_ids)
    with torch.inference_mode():
        model = tiny_engine.model
        logits = model(torch.tensor([prompt + output], device=model.device)).logits[0, len(prompt) - 1:-1].float().cpu()
    for step, entry in enumerate(logprobs_of(events)):
        scores = logits[step].clone()
        seen = sorted(set(output[:step]))
        scores[seen] -= penalty  # the presence penalty, once per token already output
        assert entry.logprob == pytest.approx(float(torch.log_softmax(scores, -1)[entry.token_id]), abs=1e-4)


async def test_bytes_concatenate_to_the_texts_utf8(tiny_engine: LocalEngine,
                                                   tokenizer: PreTrainedTokenizerBase) -> None:
    for seed in range(4):  # sampled, so multi-byte characters split across tokens show up too
        sampled = SamplingParams(temperature=1.0, seed=seed, max_tokens=40, logprobs=1, ignore_eos=True)
        events = await run(tiny_engine, prompt_ids=prompts(tokenizer, 1)[0], sampling=sampled)
        entries = logprobs_of(events)
        text = text_of(events)
        special = set(tokenizer.all_special_ids)
        joined = b"".join(bytes(e.bytes) for e in entries if e.token_id not in special)
        # A random model also writes bytes that are no UTF-8 at all: the text shows those as U+FFFD.
        assert joined.decode("utf-8", errors="replace") == text
        if "\ufffd" not in text:
            assert joined == text.encode()
        for entry in entries:
            assert entry.token == bytes(entry.bytes).decode("utf-8", errors="replace")
            for event in events:  # each event carries one logprob per token id
                if isinstance(event, TokenEvent):
                    assert [e.token_id for e in event.logprobs] == list(event.token_ids)


async def test_a_row_without_logprobs_in_the_same_batch_is_unaffected(tiny_engine: LocalEngine,
                                                                      tokenizer: PreTrainedTokenizerBase) -> None:
    batch = prompts(tokenizer, 6)
    alone = [await run(tiny_engine, prompt_ids=p, sampling=greedy(15)) for p in batch]
    mixed = [greedy(15, logprobs=3) if i % 2 else greedy(15) for i in range(6)]
    together = await asyncio.gather(*(run(tiny_engine, prompt_ids=p, sampling=s)
                                      for p, s in zip(batch, mixed, strict=True)))
    for i, (first, second) in enumerate(zip(alone, together, strict=True)):
        assert finish_of(first).output_ids == finish_of(second).output_ids, i  # asking for logprobs changes nothing
        assert text_of(first) == text_of(second)
        assert bool(logprobs_of(second)) == bool(i % 2)


def test_sentencepiece_pieces_map_to_their_bytes() -> None:
    """A SentencePiece-style vocabulary (``▁`` for a space, ``<0xNN>`` byte fallback) as Llama 2 and Mistral
    ship it, built here rather than downloaded."""
    vocab = {"<unk>": 0, "<s>": 1, "▁hello": 2, "▁wor": 3, "ld": 4, "<0xE2>": 5, "<0x82>": 6, "<0xAC>": 7}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", unk_token="<unk>")
    table = TokenBytes.of(tokenizer)
    assert table.bytes_of(2) + table.bytes_of(3) + table.bytes_of(4) == b" hello world"
    assert table.bytes_of(5) + table.bytes_of(6) + table.bytes_of(7) == "€".encode()
    assert table.text_of(5) == "\ufffd"  # a part of a character reads as the replacement character
    assert table.bytes_of(1) == b"<s>"
    assert table.bytes_of(10_000) == b""  # a padded embedding row past the vocabulary


def test_byte_level_pieces_map_to_their_bytes(tokenizer: PreTrainedTokenizerBase) -> None:
    table = TokenBytes.of(tokenizer)
    text = "Grüße, 世界 🙂\ttab\nline  two"
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert b"".join(table.bytes_of(token) for token in ids) == text.encode()
