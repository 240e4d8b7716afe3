"""Log-probabilities of generated tokens, computed in the decode step from the scores a row is sampled from.

What is reported is the log-softmax of the row's final scores: the model's logits after the repetition, presence
and frequency penalties and after a grammar's mask (a masked-out token gets OpenAI's floor, -9999), but before
temperature, top-k and top-p. So a greedy row without penalties reports the model's own distribution, and the
temperature does not change the numbers, as OpenAI's answers behave. vLLM offers both ends (``--logprobs-mode``):
its default ``raw_logprobs`` is taken before any processing (penalties and masks too), and ``processed_logprobs``
after all of it, temperature and top-k/top-p included; the choice here sits between, where issue 17 asks for it
("after penalties and masks, as sampled").

A token's exact bytes come from a table built once per tokenizer (``TokenBytes``): byte-level BPE tokens (GPT-2,
SmolLM2, Llama 3, Qwen; GGUF-loaded tokenizers convert to the same) map their characters back through GPT-2's
byte alphabet; SentencePiece tokens turn ``▁`` into a space and ``<0xNN>`` into that byte; added and special
tokens are their text's UTF-8.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import torch

from engine.requests import TokenLogprob, TopLogprob

# What OpenAI reports for a token that cannot be chosen at all (JSON has no -Infinity).
LOGPROB_FLOOR = -9999.0


@cache
def _byte_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet reversed: the printable character that stands for each byte, to the byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    characters = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            characters.append(256 + extra)
            extra += 1
    return {chr(character): byte for byte, character in zip(printable, characters, strict=True)}


def _uses(component: dict[str, Any] | None, kind: str) -> bool:
    """Whether a tokenizer.json component (a decoder, a pre-tokenizer) is, or contains, one of type ``kind``."""
    if not component:
        return False
    if component.get("type") == kind:
        return True
    parts = component.get("decoders") or component.get("pretokenizers") or []
    return any(_uses(part, kind) for part in parts)


@dataclass(frozen=True)
class TokenBytes:
    """Every token id's exact bytes, for one tokenizer. Ids past the tokenizer's vocabulary (a model's padded
    embedding rows) have none."""

    table: tuple[bytes, ...]

    @classmethod
    def of(cls, tokenizer: Any) -> TokenBytes:
        """From a transformers tokenizer with a fast (Rust) backend."""
        backend = tokenizer.backend_tokenizer
        spec = json.loads(backend.to_str())
        byte_level = _uses(spec.get("decoder"), "ByteLevel") or _uses(spec.get("pre_tokenizer"), "ByteLevel")
        added = {item["id"]: item["content"] for item in spec.get("added_tokens") or []}
        pieces = backend.get_vocab(with_added_tokens=True)
        size = max(len(tokenizer), max(pieces.values(), default=-1) + 1)
        table = [b""] * size
        alphabet = _byte_alphabet()
        for piece, token_id in pieces.items():
            if token_id in added:
                table[token_id] = added[token_id].encode()
            elif byte_level:
                # Every character of a byte-level token is one byte's stand-in; anything else is taken as text.
                table[token_id] = b"".join(bytes([alphabet[c]]) if c in alphabet else c.encode() for c in piece)
            else:
                table[token_id] = _sentencepiece_bytes(piece)
        return cls(tuple(table))

    def bytes_of(self, token_id: int) -> bytes:
        return self.table[token_id] if 0 <= token_id < len(self.table) else b""

    def text_of(self, token_id: int) -> str:
        # A part of a character reads as the replacement character; its bytes stay exact.
        return self.bytes_of(token_id).decode("utf-8", errors="replace")


def _sentencepiece_bytes(piece: str) -> bytes:
    if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
        try:
            return bytes([int(piece[3:5], 16)])
        except ValueError:
            pass
    return piece.replace("▁", " ").encode()


@dataclass
class LogprobRecorder:
    """One sequence's logprobs: the step computes the chosen token's (``observe``), the scheduler keeps it when
    the token is accepted (``accept``) and hands them out with the event that carries those tokens."""

    top: int  # how many likeliest alternatives with each token (0..20)
    vocabulary: TokenBytes
    recorded: list[TokenLogprob] = field(default_factory=list)  # one per accepted output token
    _pending: TokenLogprob | None = None

    def observe(self, scores: torch.Tensor, token: int) -> None:
        """``scores``: the row's final scores (float32, one per vocabulary entry) that ``token`` was chosen from."""
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        top: tuple[TopLogprob, ...] = ()
        if self.top:
            values, ids = torch.topk(logprobs, min(self.top, logprobs.numel()))  # sorted, likeliest first
            top = tuple(self._top(token_id, value) for token_id, value in zip(ids.tolist(), values.tolist(),
                                                                              strict=True))
        chosen = self._top(token, float(logprobs[token]))
        self._pending = TokenLogprob(token, chosen.token, chosen.bytes, chosen.logprob, top)

    def accept(self, token: int) -> None:
        pending, self._pending = self._pending, None
        if pending is None or pending.token_id != token:
            raise RuntimeError(f"no logprob was computed for the accepted token {token}")
        self.recorded.append(pending)

    def between(self, start: int, end: int) -> tuple[TokenLogprob, ...]:
        return tuple(self.recorded[start:end])

    def _top(self, token_id: int, value: float) -> TopLogprob:
        raw = self.vocabulary.bytes_of(token_id)
        return TopLogprob(token_id, self.vocabulary.text_of(token_id), tuple(raw), max(value, LOGPROB_FLOOR))
