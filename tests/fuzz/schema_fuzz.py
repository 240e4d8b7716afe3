"""Schema fuzzing (`make fuzz`): Schemathesis against a real `llmws serve`, once per role (admin, user, anonymous).

Each role gets a throwaway server of its own (a fresh SQLite file, its own copy of a tiny random Llama), so what
one run breaks cannot hide a failure in the next. Every answer is held to the OpenAPI document: no 5xx, no
status, content type or body the document does not declare, no allowed method missing from `Allow`.

Held back, and why:
- ``positive_data_acceptance``: the API refuses with 400 what JSON Schema cannot describe (a weak password,
  ``since`` after ``until``, an unknown runner template, the wrong current password), by design.
- ``negative_data_rejection``: request bodies are validated in pydantic's lax mode, which takes ``0`` for
  ``false`` and ``"1.5"`` for ``1.5`` (as OpenAI's API does); refusing those would break lenient clients.
- ``POST /auth/logout`` as admin or user: it ends the session the fuzzer is using (anonymously it is fuzzed).
- ``POST /admin/engine/unload``: it unloads the only model, after which the chat routes could answer only 503.
- The admin's own account is never PATCHed (tests/fuzz/schema_hooks.py): a new password revokes the token.
Runners are fuzzed with every launch template turned off (``LLMWS_RUNNER_TEMPLATES=""``), so nothing is started;
the server's outbound HTTP (providers, downloads) goes to a closed loopback proxy, so nothing leaves the machine.

Run: `.venv/bin/python -m tests.fuzz.schema_fuzz [--max-examples 20] [--max-time 90] [--roles admin,user]`.
Exits non-zero on any failure; each role's report is kept in the work folder (printed at the end).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
ADMIN_PASSWORD = "fuzz-admin-password-123"
USER_PASSWORD = "fuzz-user-password-123"
ROLES = ("admin", "user", "anonymous")
MODEL_CONTEXT = 128
CLOSED_PROXY = "http://127.0.0.1:9"  # the discard port, closed: any request that would leave the machine fails
CONFIG = Path(__file__).with_name("schemathesis.toml")
EXCLUDED_CHECKS = ["positive_data_acceptance", "negative_data_rejection"]
EXCLUDED_FOR_CALLERS = ["/auth/logout"]
EXCLUDED_FOR_ADMIN = ["/admin/engine/unload"]


@dataclass
class RoleResult:
    role: str
    returncode: int
    report: Path
    healthy_after: bool

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.healthy_after


def build_tiny_model(folder: Path) -> Path:
    """A seeded tiny Llama with the demo tokenizer (like the tests' ``chat_model_dir``): ``folder/tiny-chat``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from engine.demo_model import demo_model_path
    from engine.loader import converted_folder

    gguf = demo_model_path(REPO / "models")
    if not gguf.is_file():
        raise SystemExit(f"the demo model is missing at {gguf}: run `make demo-model`")
    tokenizer = AutoTokenizer.from_pretrained(converted_folder(gguf, REPO / "var" / "cache" / "converted"))
    torch.manual_seed(4321)
    # A 128-token context keeps every generation short: a fuzzed max_tokens cannot tie up 2 CPU cores for minutes.
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=MODEL_CONTEXT,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    target = folder / "tiny-chat"
    LlamaForCausalLM(config).eval().save_pretrained(target)
    tokenizer.save_pretrained(target)
    return target


def server_env(folder: Path, models: Path) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith("LLMWS_") and name.lower() not in {"http_proxy", "https_proxy", "all_proxy",
                                                                        "no_proxy"}}
    env |= {"LLMWS_DATA_DIR": str(folder / "var"), "LLMWS_DATABASE_URL": f"sqlite:///{folder / 'llmws.db'}",
            "LLMWS_MODEL_DIRS": str(models), "LLMWS_ADMIN_PASSWORD": ADMIN_PASSWORD, "LLMWS_RUNNER_TEMPLATES": "",
            "LLMWS_STREAM_RESUME_WINDOW": "2", "LLMWS_USAGE_FLUSH_INTERVAL": "1", "PYTHONUNBUFFERED": "1",
            "LLMWS_SECRET_KEY": "fuzz-secret-key-0123456789abcdef-0123456789"}
    for name in ("http_proxy", "https_proxy", "all_proxy"):
        env[name] = env[name.upper()] = CLOSED_PROXY
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost"
    return env


def credentials(base_url: str, role: str) -> tuple[dict[str, str], str | None]:
    """(headers to send, the caller's own user id) for a role."""
    if role == "anonymous":
        return {}, None
    admin = httpx.post(f"{base_url}/auth/login", json={"username": "admin", "password": ADMIN_PASSWORD}).json()
    admin_headers = {"Authorization": f"Bearer {admin['access_token']}"}
    if role == "admin":
        me = httpx.get(f"{base_url}/auth/me", headers=admin_headers).json()
        return admin_headers, str(me["id"])
    username = f"fuzz-{uuid.uuid4().hex[:8]}"
    created = httpx.post(f"{base_url}/admin/users", headers=admin_headers,
                         json={"username": username, "password": USER_PASSWORD})
    created.raise_for_status()
    token = httpx.post(f"{base_url}/auth/login", json={"username": username, "password": USER_PASSWORD})
    return {"Authorization": f"Bearer {token.json()['access_token']}"}, str(created.json()["id"])


def schemathesis_command(base_url: str, role: str, headers: dict[str, str], *, max_examples: int, max_time: int,
                         seed: int | None, phases: str | None) -> list[str]:
    command = [SCHEMATHESIS, "--config-file", str(CONFIG), "run", f"{base_url}/openapi.json", "--checks", "all",
               "--exclude-checks", ",".join(EXCLUDED_CHECKS), "--max-examples", str(max_examples),
               "--max-time", str(max_time), "--workers", "1", "--request-timeout", "60", "--max-response-time", "60",
               "--no-color",
               "--suppress-health-check", "all", "--warnings", "off"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    excluded = (EXCLUDED_FOR_CALLERS if role != "anonymous" else []) + (EXCLUDED_FOR_ADMIN if role == "admin" else [])
    for path in excluded:
        command += ["--exclude-path", path]
    if seed is not None:
        command += ["--seed", str(seed)]
    if phases:
        command += ["--phases", phases]
    return command


def fuzz_role(role: str, workdir: Path, model: Path, **options: object) -> RoleResult:
    from db import migrate
    from tests.support.live import start_server, wait_ready

    folder = workdir / role
    folder.mkdir(parents=True)
    shutil.copytree(model, folder / "models" / model.name)  # its own copy: a fuzzed delete touches no other run
    env = server_env(folder, folder / "models")
    migrate.upgrade(f"sqlite+aiosqlite:///{folder / 'llmws.db'}")
    server = start_server(folder, env, "server")
    report = folder / "schemathesis.txt"
    try:
        wait_ready(server)
        headers, own_id = credentials(server.base_url, role)
        command = schemathesis_command(server.base_url, role, headers, **options)  # type: ignore[arg-type]
        hooks_env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.schema_hooks", "PYTHONPATH": str(REPO)}
        if role == "admin" and own_id is not None:
            hooks_env["LLMWS_FUZZ_OWN_USER_ID"] = own_id
        with report.open("w") as sink:
            returncode = subprocess.run(command, env=hooks_env, cwd=folder, stdout=sink, stderr=subprocess.STDOUT,
                                        check=False).returncode
        try:
            healthy = httpx.get(f"{server.base_url}/healthz", timeout=10).status_code == 200
        except httpx.TransportError:
            healthy = False
    finally:
        server.stop()
    return RoleResult(role, returncode, report, healthy)


def run(roles: list[str], workdir: Path, **options: object) -> list[RoleResult]:
    model = build_tiny_model(workdir / "model")
    return [fuzz_role(role, workdir, model, **options) for role in roles]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--roles", default=",".join(ROLES), help="comma-separated, of: " + ", ".join(ROLES))
    parser.add_argument("--max-examples", type=int, default=20, help="test cases per operation and phase")
    parser.add_argument("--max-time", type=int, default=90, help="seconds of fuzzing per role")
    parser.add_argument("--seed", type=int, default=None, help="reproduce a run (its seed is in the report)")
    parser.add_argument("--phases", default=None, help="schemathesis phases (default: all)")
    parser.add_argument("--workdir", type=Path, default=None, help="where servers and reports go (default: a temp dir)")
    args = parser.parse_args(argv)
    roles = [role.strip() for role in args.roles.split(",") if role.strip()]
    if unknown := set(roles) - set(ROLES):
        parser.error(f"unknown roles {sorted(unknown)}")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="llmws-fuzz-"))
    results = run(roles, workdir, max_examples=args.max_examples, max_time=args.max_time, seed=args.seed,
                  phases=args.phases)
    for result in results:
        if not result.ok:
            print(result.report.read_text()[-20_000:])
        print(f"{result.role:10} {'ok' if result.ok else 'FAILED'}  schemathesis exit {result.returncode}, "
              f"healthy after: {result.healthy_after}  report: {result.report}")
    return 0 if all(result.ok for result in results) else 1


if __name__ == "__main__":
    sys.exit(main())
