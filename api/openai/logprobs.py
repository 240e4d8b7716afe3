"""Tokens' logprobs in OpenAI's two shapes: chat's ``{content: [{token, logprob, bytes, top_logprobs}]}`` and the
legacy completions' ``{tokens, token_logprobs, top_logprobs: [{token: logprob}], text_offset}``."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.requests import TokenLogprob, TopLogprob


def chat_logprobs(entries: Sequence[TokenLogprob]) -> dict[str, Any]:
    return {"content": [{**_chat_token(entry), "top_logprobs": [_chat_token(top) for top in entry.top]}
                        for entry in entries],
            "refusal": None}


def _chat_token(token: TokenLogprob | TopLogprob) -> dict[str, Any]:
    return {"token": token.token, "logprob": token.logprob, "bytes": list(token.bytes)}


@dataclass
class TextOffsets:
    """Where each token starts in a choice's text, in characters, across the deltas of a stream: its bytes fed
    through a UTF-8 decoder as the engine's detokenizer does, so a character split over tokens counts once (at
    the token that starts it) and bytes that are no UTF-8 count as the one U+FFFD the text shows."""

    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace"))
    _characters: int = 0

    def starts(self, entries: Sequence[TokenLogprob]) -> list[int]:
        offsets = []
        for entry in entries:
            offsets.append(self._characters)
            self._characters += len(self._decoder.decode(bytes(entry.bytes)))
        return offsets


def completion_logprobs(entries: Sequence[TokenLogprob], offsets: TextOffsets) -> dict[str, Any]:
    return {"tokens": [entry.token for entry in entries], "token_logprobs": [entry.logprob for entry in entries],
            "top_logprobs": [_by_text(entry.top) for entry in entries], "text_offset": offsets.starts(entries)}


def _by_text(top: Sequence[TopLogprob]) -> dict[str, float]:
    """Two alternatives with the same text (different ids, or parts of characters) share one key: the likelier
    one's, as it comes first."""
    alternatives: dict[str, float] = {}
    for entry in top:
        alternatives.setdefault(entry.token, entry.logprob)
    return alternatives
