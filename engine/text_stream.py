"""Token ids in, safe text out: incremental detokenizing and stop strings.

``tokenizers.decoders.DecodeStream`` emits text only once it forms whole characters, so a multi-byte character
split across tokens (emoji, CJK) never shows up as U+FFFD. On top of it, text that could be the start of a stop
string is held back until it is known not to be one; a stop string itself is never emitted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


@dataclass
class TextPiece:
    text: str
    stopped: bool


@dataclass
class TextStream:
    """Special tokens are left out of the text, except those in ``kept`` (their own text, such as a tool-call
    marker that a model has as a special token, for the tool-call parser to find). A kept token's text goes out
    at once, ahead of a character whose first bytes the decoder still holds (a marker inside a character)."""

    tokenizer: Tokenizer
    stop: tuple[str, ...] = ()
    kept: frozenset[int] = frozenset()
    _decoder: DecodeStream = field(init=False)
    _pending: str = field(default="", init=False)

    def __post_init__(self) -> None:
        self._decoder = DecodeStream(skip_special_tokens=True)

    def push(self, token_id: int) -> TextPiece:
        """The text this token makes safe to emit, and whether a stop string has now appeared."""
        piece = self._decoder.step(self.tokenizer, token_id)
        if piece:
            self._pending += piece
        if token_id in self.kept:
            self._pending += self.tokenizer.id_to_token(token_id) or ""
        if not self.stop:
            text, self._pending = self._pending, ""
            return TextPiece(text, stopped=False)
        found = [at for stop in self.stop if (at := self._pending.find(stop)) != -1]
        if found:  # the earliest stop string in the text wins, whatever its place in the list
            text, self._pending = self._pending[: min(found)], ""
            return TextPiece(text, stopped=True)
        keep = _longest_stop_prefix_suffix(self._pending, self.stop)
        text, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep:]
        return TextPiece(text, stopped=False)

    def flush(self) -> str:
        """Whatever was held back, when generation ends for another reason than a stop string."""
        text, self._pending = self._pending, ""
        return text


def _longest_stop_prefix_suffix(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of ``text`` that is the beginning of some stop string."""
    longest = 0
    for stop in stops:
        for length in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:length]):
                longest = length
                break
    return longest
