"""``llmws chat``: the seed's ``llm.py`` for real, a terminal client of the WebSocket channel.

One-shot with ``--prompt``; otherwise interactive, with slash commands. It reconnects by itself after a dropped
connection (a server restart included) and resumes its session, so an answer is never cut."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from api.settings import Settings
from api.ws_client import ChatClient, ChatError

HELP = """commands:
  /config k=v ...          set sampling for this session (temperature, top_p, top_k, max_tokens, seed, system, ...)
  /resources               the server's GPUs, CPU, memory and engine
  /models                  the models served
  /switch MODEL            load another local model (admin)
  /download SOURCE [NAME]  download a model: a Hugging Face repo id or a git URL (admin)
  /session                 this session's id (resume it later with --session)
  /quit                    leave (the session stays on the server)"""


def add_chat_command(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    chat = commands.add_parser("chat", help="chat over the WebSocket channel (interactive, or --prompt)")
    chat.add_argument("--url", help="the API (default LLMWS_API_URL)")
    chat.add_argument("--token", help="login token or API key (default LLMWS_TOKEN)")
    chat.add_argument("--prompt", help="ask this once, print the answer and exit")
    chat.add_argument("--session", help="resume this session")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--temperature", type=float)
    chat.add_argument("--max-tokens", type=int)
    chat.set_defaults(handler=_chat)


def _chat(settings: Settings, args: argparse.Namespace) -> int:
    token = args.token or (settings.token.get_secret_value() if settings.token else None)
    if not token:
        print("llmws chat: give --token (a login token or API key) or set LLMWS_TOKEN", file=sys.stderr)
        return 2
    base = (args.url or settings.api_url).rstrip("/")
    url = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1) + "/v1/ws"
    client = ChatClient(url, token=token, session_id=args.session)
    config = {key: value for key, value in (("temperature", args.temperature), ("max_tokens", args.max_tokens))
              if value is not None}
    try:
        client.connect()
        if args.prompt is not None:
            _answer(client, args.prompt, args.system, config)
            return 0
        return _interactive(client, args.system, config)
    except ChatError as exc:
        print(f"llmws chat: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"llmws chat: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _answer(client: ChatClient, prompt: str, system: str | None, config: dict[str, Any]) -> None:
    for piece in client.ask(prompt, system=system, **config):
        print(piece, end="", flush=True)
    print(flush=True)


def _interactive(client: ChatClient, system: str | None, config: dict[str, Any]) -> int:
    print(f"session {client.session_id} on {client.welcome.get('model')}; /help for commands", flush=True)
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            return 0
        if not line:
            continue
        if not line.startswith("/"):
            try:
                _answer(client, line, system, config)
            except ChatError as exc:
                print(f"error: {exc}", flush=True)
            continue
        command, _, rest = line.partition(" ")
        try:
            if command in {"/quit", "/exit"}:
                return 0
            _slash(client, command, rest.strip())
        except ChatError as exc:
            print(f"error: {exc}", flush=True)


def _slash(client: ChatClient, command: str, rest: str) -> None:
    if command == "/help":
        print(HELP)
    elif command == "/session":
        print(f"session {client.session_id} (last event {client.last_seq})")
    elif command == "/resources":
        print(json.dumps({k: v for k, v in client.resources().items() if k != "type"}, indent=2))
    elif command == "/models":
        for model in client.models()["models"]:
            print(f"{model['id']} ({model['backend']})")
    elif command == "/config":
        pairs = dict(item.split("=", 1) for item in rest.split() if "=" in item)
        print(json.dumps(client.configure(**{k: _value(v) for k, v in pairs.items()})["config"]))
    elif command == "/switch":
        for event in client.switch_model(rest):
            print(event.get("message") or f"now serving {event.get('model')}", flush=True)
    elif command == "/download":
        source, _, name = rest.partition(" ")
        for event in client.download_model(source, name.strip() or None):
            print(_download_line(event), flush=True)
    else:
        print(f"unknown command {command}; /help lists them")
    sys.stdout.flush()


def _download_line(event: dict[str, Any]) -> str:
    if event["type"] == "download_started":
        return f"downloading {event['source']} as {event['name']}"
    if event["type"] == "progress":
        percent = f"{event['percent']:.0f}%" if event.get("percent") is not None else "?"
        eta = f", about {event['eta_s']:.0f} s left" if event.get("eta_s") is not None else ""
        return f"{event['stage']}: {percent} ({event['bytes']} bytes{eta})"
    if event["type"] == "download_finished":
        return f"{event['name']}: {event['status']}" + (f" ({event['error']})" if event.get("error") else "")
    return str(event.get("message", ""))


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text
