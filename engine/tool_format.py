"""How one model takes tools: the prompt that shows them, and the grammar ``tool_choice`` holds its answer to (the
calls are read back by engine/tool_calls.py).

Prompt. Where the model's chat template renders tools (its source mentions ``tools``), it gets them
(``apply_chat_template(messages, tools=...)``) along with assistant ``tool_calls`` and ``tool`` results. Otherwise
the fallback: a system message describes the tools and asks for Hermes calls
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``); an assistant's earlier calls are rendered in that
format and a tool's result becomes a user turn ``<tool_response>...</tool_response>``.

Grammar. ``tool_choice`` "required" or a named function is held by a grammar of the family's call format over the
offered tools' schemas, so the call is always well-formed; "auto" may answer in text or call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from engine.errors import InvalidParameters
from engine.requests import Constraint, GenerationRequest
from engine.tool_calls import FAMILIES, HERMES_CLOSE, HERMES_OPEN, MISTRAL_MARKER, PYTHON_TAG, Family


def offers_tools(request: GenerationRequest) -> bool:
    """Whether the model sees the tools and its calls are parsed: ``tool_choice`` "none" offers none (as
    OpenAI answers it, no calls)."""
    return bool(request.tools) and request.tool_choice != "none" and request.messages is not None


MARKERS: dict[Family, tuple[str, ...]] = {"hermes": (HERMES_OPEN, HERMES_CLOSE), "mistral": (MISTRAL_MARKER,),
                                          "llama3": (PYTHON_TAG,), "json": ()}


@dataclass(frozen=True)
class ToolFormat:
    """One model's way with tools: the call format it writes (``family``: its parser, and the grammar of a
    required call) and whether its chat template renders tools itself (``native``; else the fallback prompt).

    A call marker can be one token of the vocabulary, added to it (Qwen's ``<tool_call>``, Mistral's
    ``[TOOL_CALLS]``, Llama 3's ``<|python_tag|>``). The grammar then names that token (``marker_tokens``), since
    llguidance does not match an added token against the marker's text (Llama 3's grammar has no marker: the tag
    is optional). Where the family's marker is a special token, which decoding leaves out of the text, its text is
    kept (``kept_tokens``) so the parser sees the call begin; the parser never shows it as content."""

    family: Family
    native: bool
    marker_tokens: Mapping[str, int] = field(default_factory=dict)
    kept_tokens: frozenset[int] = frozenset()

    @classmethod
    def of(cls, tokenizer: PreTrainedTokenizerBase, parser: Family | None = None) -> ToolFormat:
        """Read off the tokenizer's chat template and vocabulary, unless the model's settings name a ``parser``."""
        if parser is not None and parser not in FAMILIES:
            raise ValueError(f"unknown tool parser {parser!r}: one of {', '.join(FAMILIES)}")
        template = getattr(tokenizer, "chat_template", None)
        template = template if isinstance(template, str) else None
        family = parser or family_of(template)
        markers = [(token_id, token) for token_id, token in tokenizer.added_tokens_decoder.items()
                   if token.content in MARKERS[family]]
        return cls(family, template_supports_tools(template), {token.content: token_id for token_id, token in markers},
                   frozenset(token_id for token_id, token in markers if token.special))

    def prompt(self, messages: list[dict[str, Any]], tools: Sequence[Mapping[str, Any]]
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The messages as the chat template takes them, and the template's extra arguments (``tools`` where it
        renders them): unchanged when neither the request nor the history has anything to do with tools."""
        uses_tools = bool(tools) or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages)
        if not uses_tools:
            return messages, {}
        if not self.native:
            return fallback_messages(messages, tools), {}
        return template_messages(messages), ({"tools": list(tools)} if tools else {})

    def constraint(self, request: GenerationRequest) -> Constraint | None:
        """The request's own constraint, or, for ``tool_choice`` "required" or a named function, the grammar of
        this format's calls over the offered tools' schemas."""
        if not offers_tools(request):
            return request.constraint
        only = chosen_name(request.tool_choice, request.tools)
        if only is None and request.tool_choice != "required":
            return request.constraint
        if request.constraint is not None:
            raise InvalidParameters("a response format cannot be combined with a required tool call",
                                    param="tool_choice")
        grammar = call_grammar(self.family, request.tools, only=only, parallel=request.parallel_tool_calls,
                               marker_tokens=self.marker_tokens)
        return Constraint(kind="grammar", spec=grammar, param="tools")


# --- prompt ----------------------------------------------------------------------------------------------------

def template_supports_tools(template: str | None) -> bool:
    """Whether a chat template renders tools itself: its Jinja source uses a ``tools`` variable."""
    return bool(template) and "tools" in template  # type: ignore[operator]


def family_of(template: str | None) -> Family:
    """The call format a model writes, read off its chat template; a template without tool support gets the
    fallback prompt, which asks for Hermes calls."""
    source = template or ""
    if HERMES_OPEN in source:
        return "hermes"
    if MISTRAL_MARKER in source:
        return "mistral"
    if PYTHON_TAG in source or "ipython" in source:
        return "llama3"
    return "json" if template_supports_tools(template) else "hermes"


def _function(tool: Mapping[str, Any]) -> Mapping[str, Any]:
    return tool.get("function") or {}


def fallback_system_prompt(tools: Sequence[Mapping[str, Any]]) -> str:
    """The tools described for a model whose template cannot render them (Hermes' own wording, shortened)."""
    described = "\n".join(json.dumps({"type": "function", "function": dict(_function(tool))}, ensure_ascii=False)
                          for tool in tools)
    return ("You may call one or more functions to assist with the user query. The functions you can call are "
            f"listed within <tools></tools>:\n<tools>\n{described}\n</tools>\n"
            "To call a function, answer with a JSON object with its name and arguments within "
            "<tool_call></tool_call> tags:\n"
            '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>')


def fallback_messages(messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]]
                      ) -> list[dict[str, str]]:
    """Messages as a template without tool support takes them: tools in the system message, earlier calls
    written out as Hermes markup, tool results as user turns."""
    out: list[dict[str, str]] = []
    for message in messages:
        role, content = message.get("role", "user"), message.get("content") or ""
        if role == "assistant" and message.get("tool_calls"):
            calls = [f'{HERMES_OPEN}\n{{"name": {json.dumps(call["function"]["name"])}, "arguments": '
                     f'{call["function"].get("arguments") or "{}"}}}\n{HERMES_CLOSE}'
                     for call in message["tool_calls"]]
            out.append({"role": "assistant", "content": "\n".join([content, *calls]).strip()})
        elif role == "tool":
            out.append({"role": "user", "content": f"<tool_response>\n{content}\n</tool_response>"})
        else:
            out.append({"role": role, "content": content})
    if tools:
        system = fallback_system_prompt(tools)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{system}"}
        else:
            out.insert(0, {"role": "system", "content": system})
    return out


def template_messages(messages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Messages for a template that renders tools: a call's arguments as the object most templates expect
    (``tojson`` on a string would quote it twice)."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call.get("function") or {})
                try:
                    function["arguments"] = json.loads(function.get("arguments") or "{}")
                except ValueError:
                    pass  # not JSON: leave the model's text as it was
                calls.append({**call, "function": function})
            message = {**message, "tool_calls": calls}
        out.append(dict(message))
    return out


# --- tool_choice -----------------------------------------------------------------------------------------------

def chosen_name(tool_choice: str | Mapping[str, Any] | None, tools: Sequence[Mapping[str, Any]]) -> str | None:
    """The function a named ``tool_choice`` asks for (checked to be offered), else None."""
    if not isinstance(tool_choice, Mapping):
        if tool_choice not in (None, "none", "auto", "required"):
            raise InvalidParameters("tool_choice must be 'none', 'auto', 'required' or a function",
                                    param="tool_choice")
        if tool_choice in ("required",) and not tools:
            raise InvalidParameters("tool_choice 'required' needs tools", param="tool_choice")
        return None
    name = (tool_choice.get("function") or {}).get("name")
    if name not in {_function(tool).get("name") for tool in tools}:
        raise InvalidParameters(f"tool_choice names a function that is not in tools: {name!r}", param="tool_choice")
    return str(name)


def call_grammar(family: Family, tools: Sequence[Mapping[str, Any]], *, only: str | None, parallel: bool,
                 marker_tokens: Mapping[str, int] | None = None) -> str:
    """A Lark grammar (llguidance's dialect, ``%json`` for each tool's parameters) for one call, or one or more
    when ``parallel``, in the family's format, of ``only`` or of any offered tool: what "required" and a named
    ``tool_choice`` are held to. Compact JSON, name before arguments, so the stream can name a call at once. A
    marker in ``marker_tokens`` is that one token (llguidance's ``<[id]>``), any other is its text."""
    def marker(text: str) -> str:
        return f"<[{marker_tokens[text]}]>" if marker_tokens and text in marker_tokens else json.dumps(text)

    offered = [_function(tool) for tool in tools if only is None or _function(tool).get("name") == only]
    rules, alternatives = [], []
    for i, function in enumerate(offered):
        schema = dict(function.get("parameters") or {"type": "object"})
        schema["x-guidance"] = {"whitespace_flexible": False}
        head = json.dumps('{"name": ' + json.dumps(function["name"]) + ', "' +
                          ("parameters" if family == "llama3" else "arguments") + '": ')
        rules.append(f"args{i}: %json {json.dumps(schema)}")
        alternatives.append(f"{head} args{i} \"}}\"")
    rules.insert(0, "fn: " + " | ".join(alternatives))
    if family == "hermes":
        call, separator, before, after = f'{marker(HERMES_OPEN)} "\\n" fn "\\n" {marker(HERMES_CLOSE)}', '"\\n"', "", ""
    elif family == "mistral":
        call, separator, before, after = "fn", '", "', f'{marker(MISTRAL_MARKER)} "[" ', ' "]"'
    elif family == "llama3":
        call, separator, before, after = "fn", '"; "', "", ""
    else:
        call, separator, before, after = "fn", '", "', '"[" ', ' "]"'
    calls = f"call ({separator} call)*" if parallel else "call"
    return "\n".join([f"start: {before}{calls}{after}", f"call: {call}", *rules])
