"""What the WebSocket's messages say (docs/websocket.md), read and checked: the frame's JSON and type, an
inference's turn (``messages``, the seed's ``prompt: {system, user}``, or text), config names (the seed's
``max_new_tokens`` for our ``max_tokens``), sampling, the client's request id, and the seed's names for the model
management fields (``model_path``, ``repo``, ``target_dir``). A bad message raises ``ProtocolError``, which the
channel answers with an ``error``; nothing here touches the socket or the session."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from api.services.chat import response_formats, tool_offers
from api.services.chat import sampling as chat_sampling
from api.services.chat.sampling import NATIVE_DEFAULTS
from api.services.chat.turn import Sampling, Turn
from api.services.errors import InvalidInput

SAMPLING_KEYS = {"temperature", "top_p", "top_k", "max_tokens", "seed", "stop", "repetition_penalty",
                 "presence_penalty", "frequency_penalty"}
TOOL_KEYS = {"tools", "tool_choice", "parallel_tool_calls"}
CONFIG_KEYS = SAMPLING_KEYS | TOOL_KEYS | {"system", "model", "response_format"}
SEED_NAMES = {"max_new_tokens": "max_tokens"}  # the seed's config names for ours
MAX_CLIENT_ID_CHARS = 64  # what usage_logs.request_id holds


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass(frozen=True)
class Inference:
    """One ``inference`` message over its session's config: the new turn, and what it is generated with."""

    messages: list[dict[str, str]]  # {role, content}, and a tool result's tool_call_id
    system: str | None
    model: str | None
    sampling: Sampling  # what the message and the session set, checked; the chat core resolves the rest
    client_id: str | None
    options: Turn = Turn()  # the tools offered and the response format (no messages: those are the session's)


def parse(text: str) -> tuple[str, dict[str, Any]]:
    """A frame's message and its type (the seed's connect message, ``{"session_id": ...}``, is a ``hello``)."""
    try:
        message = json.loads(text)
        # A lone surrogate ("\ud800" escaped in JSON) cannot be stored, nor sent back in a text frame.
        json.dumps(message, ensure_ascii=False).encode()
    except RecursionError:  # nested deeper than the parser goes
        raise ProtocolError("invalid_json", "a message must not nest arrays or objects that deeply") from None
    except UnicodeEncodeError:
        raise ProtocolError("invalid_unicode", "a message must not hold lone surrogates such as \\ud800") from None
    except ValueError:
        raise ProtocolError("invalid_json", "a message must be a JSON object") from None
    kind = message.get("type") if isinstance(message, dict) else None
    if kind is None and isinstance(message, dict) and "session_id" in message:
        kind = "hello"
    if not isinstance(kind, str):
        raise ProtocolError("missing_field", "a message needs a string field 'type'")
    return kind, message


def inference(message: dict[str, Any], session_config: dict[str, Any]) -> Inference:
    """The message's turn, and its config over the session's (the sampling checked, over the server's defaults)."""
    turn = _turn(message)
    config = {**session_config, **our_names(message.get("config"), "config"),
              **{key: message[key] for key in TOOL_KEYS if key in message}}
    return Inference(messages=turn["messages"], system=turn["system"] or config.get("system"),
                     model=config.get("model"), sampling=sampling(config), client_id=_client_id(message.get("id")),
                     options=options(config))


def config_changes(message: dict[str, Any], session_config: dict[str, Any]) -> dict[str, Any]:
    """The session's config with a ``config`` message's changes (in ``config``, or the message's own fields),
    checked before anything is stored."""
    changes = our_names(message.get("config", {k: v for k, v in message.items() if k != "type"}), "config")
    if not set(changes) <= CONFIG_KEYS:
        raise ProtocolError("invalid_value", f"config takes {sorted(CONFIG_KEYS)} (or the seed's {sorted(SEED_NAMES)})")
    merged = {**session_config, **changes}
    sampling(merged)  # refuses bad values
    options(merged)
    return merged


def our_names(value: Any, name: str) -> dict[str, Any]:
    """A config object with the seed's names (``max_new_tokens``) turned into ours; both for one setting must agree."""
    config = dict(_dict(value, name))
    for seed_name, ours in SEED_NAMES.items():
        if seed_name in config:
            given = config.pop(seed_name)
            if ours in config and config[ours] != given:
                raise ProtocolError("invalid_value", f"'{seed_name}' and '{ours}' are one setting; they disagree")
            config[ours] = given
    return config


def sampling(config: dict[str, Any]) -> Sampling:
    """The sampling a config sets (the message's over the session's), refused here when it is bad, at ``config``
    time rather than when a generation starts; the chat core resolves it over the defaults when one does."""
    try:
        requested = Sampling.from_mapping({key: config[key] for key in SAMPLING_KEYS if key in config})
        chat_sampling.resolve(requested, server=NATIVE_DEFAULTS)
    except TypeError as exc:
        raise ProtocolError("invalid_value", f"bad config: {exc}") from exc
    return requested


def options(config: dict[str, Any]) -> Turn:
    """The config's ``response_format`` and tools (OpenAI's objects), refused at ``config`` time when malformed;
    the engine compiles the grammar and checks a named ``tool_choice`` when a generation starts."""
    try:
        return tool_offers.options(config.get("tools"), config.get("tool_choice"), config.get("parallel_tool_calls"),
                                   response_formats.read(config.get("response_format")))
    except InvalidInput as exc:
        raise ProtocolError("invalid_value", f"bad config: {exc.message}") from exc


# --- model management: our field names, or the seed's --------------------------------------------------------------

def switch_reference(message: dict[str, Any]) -> str:
    """``model`` (a name from list_models) or the seed's ``model_path`` (``models/<name>``)."""
    reference = message.get("model", message.get("model_path"))
    if not isinstance(reference, str) or not reference:
        raise ProtocolError("missing_field", "switch_model needs 'model' (a name from list_models) or "
                                             "'model_path' (models/<name>)")
    return reference


def model_name(message: dict[str, Any], kind: str) -> str:
    name = message.get("model")
    if not isinstance(name, str) or not name:
        raise ProtocolError("missing_field", f"{kind} needs 'model' (a name from list_models)")
    return name


def download_arguments(message: dict[str, Any]) -> tuple[Any, Any, Any]:
    """``source``, ``name`` and ``revision`` as sent (the seed's ``repo`` and ``target_dir`` for the first two),
    for the download service to check."""
    source, name = message.get("source", message.get("repo")), message.get("name", message.get("target_dir"))
    return source, name, message.get("revision")


# --- values -------------------------------------------------------------------------------------------------------

def optional_uuid(value: Any, name: str) -> uuid.UUID | None:
    if value in (None, ""):
        return None
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise ProtocolError("invalid_value", f"{name} must be a session id from 'welcome'") from None


def non_negative_int(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ProtocolError("invalid_value", f"{name} must be a whole number ≥ 0")
    return value


def bearer(header: str) -> str | None:
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _turn(message: dict[str, Any]) -> dict[str, Any]:
    """The new turn from ``messages``, the seed's ``prompt: {system, user}``, or ``prompt``/``message`` text."""
    if "messages" in message:
        items = message["messages"]
        if (not isinstance(items, list) or not items or not all(
                isinstance(m, dict) and m.get("role") in {"user", "assistant", "system", "tool"}
                and isinstance(m.get("content"), str) for m in items)):
            raise ProtocolError("invalid_value", "messages must be a non-empty list of {role, content}")
        if any(m["role"] == "tool" and not (isinstance(m.get("tool_call_id"), str) and m["tool_call_id"])
               for m in items):
            raise ProtocolError("missing_field", "a tool result (role tool) needs the tool_call_id it answers")
        system = next((m["content"] for m in items if m["role"] == "system"), None)
        return {"system": system, "messages": [
            {"role": m["role"], "content": m["content"], **({"tool_call_id": m["tool_call_id"]}
                                                             if m["role"] == "tool" else {})}
            for m in items if m["role"] != "system"]}
    prompt = message.get("prompt", message.get("message"))
    if isinstance(prompt, dict):
        user = prompt.get("user")
        if not isinstance(user, str) or not user:
            raise ProtocolError("missing_field", "prompt needs 'user' text")
        system = prompt.get("system")
        return {"system": system if isinstance(system, str) and system else None,
                "messages": [{"role": "user", "content": user}]}
    if isinstance(prompt, str) and prompt:
        return {"system": None, "messages": [{"role": "user", "content": prompt}]}
    raise ProtocolError("missing_field", "inference needs 'messages', 'prompt' {system, user} or 'prompt' text")


def _client_id(value: Any) -> str | None:
    """A client's own request id, checked: it is echoed in events and must stay printable and short."""
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ProtocolError("invalid_value", "id must be a string")
    text = str(value)
    if len(text) > MAX_CLIENT_ID_CHARS or not text.isprintable():
        raise ProtocolError("invalid_value", f"id must be at most {MAX_CLIENT_ID_CHARS} printable characters")
    return text


def _dict(value: Any, name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError("invalid_value", f"{name} must be an object")
    return value
