"""Tool calls as the chat and the conversation browser show them: the function's name and its arguments
(pretty-printed JSON when they parse), never the model's raw call markup."""

from __future__ import annotations

import json
import re
from typing import Any


def calls_markdown(calls: list[dict[str, Any]]) -> str:
    """Markdown for calls in OpenAI's shape (``[{id, type, function: {name, arguments}}]``)."""
    return "\n\n".join(_call(call) for call in calls)


def _call(call: dict[str, Any]) -> str:
    function = call.get("function") or {}
    arguments = function.get("arguments") or ""
    try:
        arguments = json.dumps(json.loads(arguments), indent=2, ensure_ascii=False)
    except ValueError:
        pass  # still streaming, or not JSON: shown as the model wrote it
    # A fence longer than any run of backticks in the arguments, so they cannot close it.
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", arguments)), default=0))
    name = str(function.get("name") or "?").replace("`", "")
    return f"**Tool call** `{name}`\n\n{fence}json\n{arguments}\n{fence}"


def with_calls(text: str, calls: list[dict[str, Any]]) -> str:
    """A reply's text, then its calls."""
    return "\n\n".join(part for part in (text, calls_markdown(calls)) if part)
