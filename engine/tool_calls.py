"""Tool calls on the local engine, read back out of the model's text while it streams (how tools reach the prompt
and the grammar ``tool_choice`` holds a model to are engine/tool_format.py).

One family per model, from its template (``tool_format.family_of``), overridable per model:
  hermes   ``<tool_call>{"name": "f", "arguments": {...}}</tool_call>`` anywhere in the text (Hermes, Qwen, the
           fallback prompt)
  llama3   the whole answer is ``{"name": "f", "parameters": {...}}`` (optionally after ``<|python_tag|>``), calls
           separated by ``;``
  mistral  ``[TOOL_CALLS][{"name": "f", "arguments": {...}}, ...]``
  json     the generic fallback: the answer is a JSON object or list of objects with "name" and
           "arguments" (or "parameters")
The parser re-reads the text it has so far at each step and emits only what is new, so the streamed pieces are
prefixes of the one-shot answer by construction: a call's arguments are the model's own JSON text of the value,
sent as it grows, and so they concatenate to exactly the final arguments (no re-serialising of partial JSON, the
cause of corrupted streamed arguments elsewhere). Text that could still become a call marker is held back, so no
markup leaks into content.
"""

from __future__ import annotations

import json
import secrets
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

Family = Literal["hermes", "llama3", "mistral", "json"]
FAMILIES: tuple[Family, ...] = ("hermes", "llama3", "mistral", "json")

HERMES_OPEN, HERMES_CLOSE = "<tool_call>", "</tool_call>"
MISTRAL_MARKER = "[TOOL_CALLS]"
PYTHON_TAG = "<|python_tag|>"
ARGUMENT_KEYS = ("arguments", "parameters")
_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


# --- parsing ---------------------------------------------------------------------------------------------------

@dataclass
class ParsedCall:
    name: str | None = None
    arguments: str = ""  # the JSON text of the arguments so far (all of it once ``complete``)
    complete: bool = False


@dataclass
class Parsed:
    """What the text so far says: content safe to show, and the calls (the last one possibly unfinished)."""

    content: str
    calls: list[ParsedCall] = field(default_factory=list)


def _held_prefix(text: str, markers: Sequence[str]) -> int:
    """How many characters at the end of ``text`` could be the start of a marker (held back from content)."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), 0, -1):
            if marker.startswith(text[-size:]):
                longest = max(longest, size)
                break
    return longest


def _scan_value(text: str, start: int) -> int | None:
    """The end (exclusive) of the JSON value starting at ``start``, or None while it is unfinished."""
    depth, in_string, escaped = 0, False, False
    i = start
    first = text[start] if start < len(text) else ""
    if first not in "{[\"":
        # a scalar: ends at a delimiter
        while i < len(text) and text[i] not in ",}] \n\t\r":
            i += 1
        return i if i < len(text) else None
    while i < len(text):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 0:
                    return i + 1
        elif char == '"':
            in_string = True
        elif char in "{[":
            depth += 1
        elif char in "}]":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \n\t\r":
        i += 1
    return i


def _parse_object(text: str, start: int) -> tuple[ParsedCall, int | None]:
    """A call object starting at ``text[start] == '{'``: its name once read, its arguments' text as far as it
    goes, and where the object ends (None while it is open)."""
    call, i = ParsedCall(), start + 1
    pending_arguments: str | None = None  # arguments written before the name: sent once the name is known
    while True:
        i = _skip_space(text, i)
        if i >= len(text):
            return call, None
        if text[i] == "}":
            if pending_arguments is not None and call.name is not None:
                call.arguments = pending_arguments
            call.complete = call.name is not None
            return call, i + 1
        if text[i] == ",":
            i += 1
            continue
        if text[i] != '"':
            return call, None  # not a call object as we know it: nothing more to read
        key_end = _scan_value(text, i)
        if key_end is None:
            return call, None
        key = json.loads(text[i:key_end])
        i = _skip_space(text, key_end)
        if i >= len(text):
            return call, None
        if text[i] != ":":
            return call, None
        i = _skip_space(text, i + 1)
        if i >= len(text):
            return call, None
        end = _scan_value(text, i)
        if key == "name":
            if end is None:
                return call, None
            try:
                call.name = str(json.loads(text[i:end]))
            except ValueError:
                return call, None
        elif key in ARGUMENT_KEYS:
            raw = text[i:end] if end is not None else text[i:]
            if call.name is None:
                if end is None:
                    return call, None
                pending_arguments = raw
            else:
                call.arguments = raw
                if end is None:
                    return call, None
        elif end is None:
            return call, None
        i = end


def _parse_sequence(text: str, start: int, separators: str) -> tuple[list[ParsedCall], int | None]:
    """Call objects from ``start`` on, apart by ``separators`` (and space); where the run of them ends."""
    calls: list[ParsedCall] = []
    i = start
    while True:
        i = _skip_space(text, i)
        while i < len(text) and text[i] in separators:
            i = _skip_space(text, i + 1)
        if i >= len(text):
            return calls, None
        if text[i] != "{":
            return calls, i
        call, end = _parse_object(text, i)
        if call.name is not None:
            calls.append(call)
        if end is None:
            return calls, None
        i = end


class ToolCallParser:
    """One choice's calls read from its text as it grows: ``feed`` the new text, get back the content to show
    and the call pieces to send; ``finish`` at the end flushes what was held back."""

    def __init__(self, family: Family, *, parallel: bool = True) -> None:
        self.family = family
        self.parallel = parallel
        self.text = ""
        self._content_sent = 0
        self._calls_sent: list[tuple[str, int]] = []  # (id, characters of arguments sent) per call

    def parse(self, text: str, final: bool) -> Parsed:
        parse = {"hermes": _parse_hermes, "mistral": _parse_mistral}.get(self.family, _parse_json_answer)
        parsed = parse(text, final, self.family)
        if not self.parallel:
            parsed.calls = parsed.calls[:1]
        return parsed

    def feed(self, text: str, final: bool = False) -> tuple[str, list[tuple[int, str | None, str | None, str]]]:
        """The new content, and the new call pieces as (call index, id, name, arguments piece); id and name only
        on a call's first piece."""
        self.text += text
        parsed = self.parse(self.text, final)
        content = parsed.content[self._content_sent:] if len(parsed.content) > self._content_sent else ""
        self._content_sent = max(self._content_sent, len(parsed.content))
        pieces: list[tuple[int, str | None, str | None, str]] = []
        for index, call in enumerate(parsed.calls):
            if call.name is None:
                continue
            if index >= len(self._calls_sent):
                if index > len(self._calls_sent):
                    break  # an earlier call is not named yet
                self._calls_sent.append((new_call_id(), 0))
                call_id, sent = self._calls_sent[index]
                pieces.append((index, call_id, call.name, call.arguments))
                self._calls_sent[index] = (call_id, len(call.arguments))
            else:
                call_id, sent = self._calls_sent[index]
                if len(call.arguments) > sent:
                    pieces.append((index, None, None, call.arguments[sent:]))
                    self._calls_sent[index] = (call_id, len(call.arguments))
        return content, pieces

    @property
    def calls_made(self) -> int:
        return len(self._calls_sent)


def _parse_hermes(text: str, final: bool, family: Family) -> Parsed:
    content: list[str] = []
    calls: list[ParsedCall] = []
    i = 0
    while True:
        opened = text.find(HERMES_OPEN, i)
        if opened < 0:
            rest = text[i:]
            held = 0 if final else _held_prefix(rest, (HERMES_OPEN,))
            content.append(rest[:len(rest) - held])
            break
        content.append(text[i:opened])
        body_start = _skip_space(text, opened + len(HERMES_OPEN))
        after = body_start
        if text.startswith("{", body_start):  # the close marker counts only after the JSON (not in a string)
            found, end = _parse_sequence(text, body_start, ",")
            calls.extend(found)
            if end is None:
                break
            after = end
        closed = text.find(HERMES_CLOSE, after)
        if closed < 0:
            break
        i = closed + len(HERMES_CLOSE)
    joined = "".join(content)
    # Whitespace is held back until something follows it: the newlines around and between calls are not
    # content, and an answer of only calls has none (OpenAI's ``content: null``).
    if not final:
        joined = joined.rstrip()
    elif calls and not joined.strip():
        joined = ""
    return Parsed(joined, calls)


def _parse_mistral(text: str, final: bool, family: Family) -> Parsed:
    marked = text.find(MISTRAL_MARKER)
    if marked < 0:
        held = 0 if final else _held_prefix(text, (MISTRAL_MARKER,))
        return Parsed(text[:len(text) - held])
    start = _skip_space(text, marked + len(MISTRAL_MARKER))
    if start < len(text) and text[start] == "[":
        calls, _ = _parse_sequence(text, start + 1, ",")
    else:
        calls, _ = _parse_sequence(text, start, ",")
    return Parsed(text[:marked], calls)


def _parse_json_answer(text: str, final: bool, family: Family) -> Parsed:
    """Llama 3 and the generic fallback: an answer that opens with a JSON object (or a list of them) is calls;
    anything else is content. Opening whitespace is held back until the answer shows which it is."""
    start = _skip_space(text, 0)
    shown = text  # the content, should the answer not be calls: without the tag, which is markup
    if text.startswith(PYTHON_TAG, start):
        shown = text[:start] + text[start + len(PYTHON_TAG):]
        start = _skip_space(text, start + len(PYTHON_TAG))
    elif not final and PYTHON_TAG.startswith(text[start:]) and start < len(text):
        return Parsed("")
    if start >= len(text):
        return Parsed("" if not final else shown)
    opener = text[start]
    if opener not in "{[":
        return Parsed(shown)
    calls, _ = _parse_sequence(text, start + (1 if opener == "[" else 0), ";,")
    if not calls and (final or _looks_unlike_a_call(text[start:])):
        return Parsed(shown)  # JSON that is not a call: the answer itself
    return Parsed("", calls)


def _looks_unlike_a_call(text: str) -> bool:
    """An object whose first key is already known not to be a call's."""
    body = text.lstrip("[ \n\t{")
    if not body.startswith('"'):
        return len(body) > 0
    end = _scan_value(body, 0)
    if end is None:
        return False
    return json.loads(body[:end]) not in ("name", *ARGUMENT_KEYS)
