"""The one place LLMWS reads its configuration: ``LLMWS_*`` environment variables and an optional ``.env``.

Everything else receives a ``Settings`` instance; nothing else reads ``os.environ``. A bad value stops the start
with a message naming the variable (see ``describe_settings_error``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import re
import secrets
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from api.services.accounts.account_rules import password_problem, username_problem
from db.private_files import private_folder
from engine.interface import CpuWeights, DecodeMode
from engine.tool_calls import Family

ENV_PREFIX = "LLMWS_"
SECRET_KEY_FILE = "secret.key"  # noqa: S105 (a name, not a secret)
MIN_SECRET_KEY_LENGTH = 32
SECRET_KEY_WAIT_S = 5.0  # for a secret.key another replica is writing
# Values people paste from examples; refused in production whatever their length.
PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "development", "dev", "test", "llmws"}


CORS_ORIGIN = re.compile(r"https?://(\[[0-9a-fA-F:]+\]|[^/\s:\[\]]+)(:\d{1,5})?")
DURATION_SHORTHAND = re.compile(r"(?P<amount>-?\d+)\s*(?P<unit>[smhd]?)")
DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def own_api_url(host: str, port: int) -> str:
    """The URL a client on this machine reaches an API bound to ``host:port`` at."""
    wildcard = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 (naming it, not binding it)
    host = wildcard.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    environment: Literal["development", "production"] = Field(
        "development", description="`production` refuses a missing or weak secret key."
    )
    host: str = Field("127.0.0.1", description="Address the API binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the API listens on.")
    ui_port: int = Field(5006, ge=1, le=65535, description="Port `llmws ui` serves the Panel app on.")
    shutdown_grace_s: float = Field(30.0, ge=1, le=3600, description="After SIGTERM, how long responses in "
                                    "flight may take; past two thirds of it, generations still running are ended "
                                    "with an `engine_stopped` error so every stream closes properly.")
    api_url: str = Field("http://127.0.0.1:8000", description="Where the UI and `llmws chat` reach the API; "
                         "default: this API's own `host` and `port` (loopback when it binds every address).")
    token: SecretStr | None = Field(None, description="The login token or API key `llmws chat` uses.")
    data_dir: Path = Field(Path("var"), description="Runtime data: database, secret key, logs, downloads.")
    database_url: str | None = Field(
        None, description="SQLAlchemy async URL; default a SQLite file `<data_dir>/llmws.db`."
    )
    model_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("models"), Path("var/models")],
        description="Folders scanned for models, separated by commas or the OS path separator.",
    )
    default_model: str | None = Field(None, description="Model loaded when several are found.")
    torch_threads: int | None = Field(None, ge=1, description="CPU threads for torch (default: torch's choice).")
    cpu_weights: CpuWeights = Field(
        "auto", description="The local model's weight format on the CPU: `float32`, `bfloat16`, or weight-only "
        "`int8` / `int4` (float32 activations); `auto` is float32 until the engine's measurement picks the fastest "
        "format that passes the quality bar (docs/engine.md, \"Weight formats on the CPU\").")
    max_batch_size: int = Field(32, ge=1, le=1024, description="Most sequences decoded together.")
    max_queue: int = Field(256, ge=1, description="Most requests waiting for a batch slot before 503s.")
    # Per replica, in memory: one user must not fill the engine's queue (`max_queue`) for everyone else.
    max_concurrent_per_user: int = Field(
        16, ge=1, description="Most generations (choices: `n` counts as n) one user may run at once on a replica, "
        "whatever the protocol; past it, 429 `concurrency_limit_exceeded`.")
    auth_cache_ttl: timedelta = Field(
        timedelta(seconds=5), description="How long a replica reuses a credential it checked (0 turns it off); "
        "changes made on this replica apply at once, another replica's within this time.")
    provider_health_interval: timedelta = Field(
        timedelta(seconds=15), description="How often each provider's `/models` is checked (and the catalog reloaded "
        "from the database, so other replicas' changes arrive).")
    runner_templates: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["llmws", "llama-cpp-python", "llama-server", "vllm"],
        description="Launch templates admins may start runners from, separated by commas (docs/gateway.md).")
    hf_token: SecretStr | None = Field(None, description="Hugging Face token for model downloads (gated repos); "
                                       "`HF_ENDPOINT` picks a mirror.")
    download_max_bytes: int = Field(
        200 * 1024**3, ge=0, description="The most bytes one model download may write (200 GiB; 0: no cap); past "
        "it the download stops, fails and its partial files are deleted.")
    download_min_free_bytes: int = Field(
        2 * 1024**3, ge=0, description="Free disk space a download must leave where it writes (2 GiB): refused at "
        "the start, or stopped when the expected size would not fit.")
    decode: DecodeMode = Field(
        "auto", description="The decode step: `auto` (CUDA graphs of a static step on a GPU for Llama-shaped models, "
        "transformers' forward otherwise), `transformers`, `static` (the static step, not recorded) or `graphs`.")
    prefix_cache_mb: int = Field(
        256, ge=0, description="Memory kept for the keys and values of recent prompts and answers, so requests "
        "that start the same way (a shared system prompt, the next turn of a chat) skip that part; 0 turns it off.")
    kv_budget_mb: int | None = Field(
        None, ge=1, description="Memory the running batch's KV cache may hold, all requests together; default: "
        "free memory less a margin, the prefix cache and one prefill chunk's activations.")
    prefill_chunk_tokens: int = Field(
        512, ge=16, description="Most prompt tokens prefilled per engine step, so running requests keep decoding "
        "while a long prompt is read.")
    tool_parsers: dict[str, Family] = Field(
        default_factory=dict, description="A local model's tool-call parser by model name, as JSON (e.g. "
        "`{\"my-qwen\": \"hermes\"}`), where the one chosen from its chat template is wrong: `hermes`, `llama3`, "
        "`mistral` or `json`.")
    secret_key: SecretStr | None = Field(
        None, description=f"Server secret; generated into `<data_dir>/{SECRET_KEY_FILE}` when unset."
    )
    admin_username: str = Field("admin", min_length=1, max_length=64, description="First admin's name.")
    admin_password: SecretStr | None = Field(
        None, description="First admin's password; generated and printed once when unset."
    )
    ui_cookie_secret: SecretStr | None = Field(
        None, description="Signs the UI's login cookies; default: derived from the server secret key.")
    open_registration: bool = Field(False, description="Whether `POST /auth/register` is open to anyone.")
    token_lifetime: timedelta = Field(
        timedelta(days=7), description="Login token lifetime: seconds, `12h`, `7d` or ISO 8601 (`P7D`)."
    )
    max_request_bytes: int = Field(1_048_576, ge=1024, description="Largest request body accepted.")
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Browser origins (`https://app.example.com`, separated by commas; `*` for "
        "any) allowed to call the API from their pages; none by default (docs/security.md).")
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins per username and address before slowing (four times as many per address).")
    login_failure_window: timedelta = Field(
        timedelta(minutes=15), description="Window in which failed logins are counted."
    )
    password_checks_per_address: int = Field(
        100, ge=1, description="Password checks one client address may cause per `login_failure_window` (logins, "
        "right or wrong, password changes and registrations: each is an Argon2 hash) before it waits.")
    stream_resume_window: timedelta = Field(
        timedelta(seconds=60), description="How long a native stream nobody follows keeps generating before it "
        "is cancelled (a client may reconnect with Last-Event-ID meanwhile).")
    stream_retention: timedelta = Field(
        timedelta(hours=1), description="How long a finished native stream's events stay available for resume.")
    usage_flush_interval: timedelta = Field(
        timedelta(milliseconds=500), description="How often usage rows are written (in batches, off the hot path).")
    ws_idle_timeout: timedelta = Field(
        timedelta(minutes=5), description="A WebSocket that sends nothing this long is closed (ping keeps it open).")
    ws_hello_timeout: timedelta = Field(
        timedelta(seconds=10), description="A WebSocket that has not authenticated (`hello`) this long after "
        "connecting is closed; `ping` does not keep it open.")
    ws_unauthenticated_per_address: int = Field(
        16, ge=1, description="WebSocket connections one client address may hold open before their `hello`, per "
        "replica; beyond it, new ones are refused.")
    ws_max_message_bytes: int = Field(1_048_576, ge=1024, description="Largest WebSocket message accepted.")
    ws_messages_per_second: int = Field(20, ge=1, description="WebSocket messages per second per connection "
                                        "(bursts of five seconds' worth); beyond it, an error per message.")
    ws_queue_length: int = Field(8, ge=1, description="Inference requests one WebSocket session may have waiting.")
    ws_session_expiry: timedelta = Field(
        timedelta(days=7), description="A WebSocket session (and its buffer) unused this long is deleted.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    otel_endpoint: str | None = Field(
        None, description="OTLP/HTTP collector to export traces to (`http://collector:4318`); no tracing without.")
    otel_service_name: str = Field("llmws", min_length=1, description="The service name traces carry.")

    @field_validator("admin_username")
    @classmethod
    def _valid_admin_username(cls, value: str) -> str:
        problem = username_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("admin_password")
    @classmethod
    def _valid_admin_password(cls, value: SecretStr | None) -> SecretStr | None:
        problem = value and password_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("model_dirs", mode="before")
    @classmethod
    def _split_model_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            parts = value.replace(os.pathsep, ",").split(",")
            return [part.strip() for part in parts if part.strip()]
        return value

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _valid_origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            if origin != "*" and not CORS_ORIGIN.fullmatch(origin):
                raise ValueError(f"{origin!r} is not an origin: scheme://host[:port], no path or trailing slash")
        return value

    @field_validator("runner_templates", mode="before")
    @classmethod
    def _split_templates(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("runner_templates")
    @classmethod
    def _known_templates(cls, value: list[str]) -> list[str]:
        from api.services.gateway.runner_templates import BUILT_IN  # noqa: PLC0415 (settings load before services)

        unknown = sorted(set(value) - set(BUILT_IN))
        if unknown:
            raise ValueError(f"unknown templates {unknown}; known: {sorted(BUILT_IN)}")
        return value

    @field_validator("token_lifetime", "login_failure_window", "stream_resume_window", "stream_retention",
                     "usage_flush_interval", "ws_idle_timeout", "ws_session_expiry", "provider_health_interval",
                     "ws_hello_timeout", "auth_cache_ttl", mode="before")
    @classmethod
    def _duration_shorthand(cls, value: object) -> object:
        """Accept plain seconds and `90s`, `15m`, `12h`, `7d` as well as ISO 8601 (`P7D`)."""
        if isinstance(value, str) and (match := DURATION_SHORTHAND.fullmatch(value.strip())):
            return timedelta(seconds=int(match["amount"]) * DURATION_UNITS[match["unit"] or "s"])
        return value

    @field_validator("token_lifetime", "login_failure_window", "stream_resume_window", "stream_retention",
                     "usage_flush_interval", "ws_idle_timeout", "ws_session_expiry", "provider_health_interval",
                     "ws_hello_timeout")
    @classmethod
    def _positive_duration(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be a positive duration")
        return value

    @field_validator("otel_endpoint")
    @classmethod
    def _collector_url(cls, value: str | None) -> str | None:
        value = (value or "").strip()
        if not value:
            return None  # set but empty: off, as unset
        if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
            raise ValueError(f"{value!r} is not a collector URL: http(s)://host[:port][/path]")
        return value

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Operators paste plain URLs; the service needs the async drivers.
        for plain, async_url in (("postgresql://", "postgresql+asyncpg://"), ("postgres://", "postgresql+asyncpg://"),
                                 ("sqlite://", "sqlite+aiosqlite://")):
            if value.startswith(plain):
                return async_url + value[len(plain):]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value

    @model_validator(mode="after")
    def _api_url_follows_the_api(self) -> Settings:
        # `LLMWS_PORT=18000 make run` moves the API; the UI started beside it must look there too.
        if "api_url" not in self.model_fields_set:
            self.api_url = own_api_url(self.host, self.port)
        return self

    @model_validator(mode="after")
    def _production_secret(self) -> Settings:
        if self.environment == "production":
            if self.secret_key is None:
                raise ValueError("LLMWS_SECRET_KEY must be set in production")
            problem = weak_secret_reason(self.secret_key.get_secret_value())
            if problem:
                raise ValueError(f"LLMWS_SECRET_KEY is weak: {problem}")
        return self

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.data_dir / 'llmws.db'}"

    @property
    def logs_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def download_dir(self) -> Path:
        """The one folder model downloads go into (always scanned for models too)."""
        return self.data_dir / "models"

    @property
    def download_work_dir(self) -> Path:
        """Downloads in progress, outside every scanned folder so a half-fetched model is never listed."""
        return self.data_dir / "cache" / "downloads"

    @property
    def model_cache_dir(self) -> Path:
        """Where GGUF models are kept converted to safetensors."""
        return self.data_dir / "cache" / "converted"


def weak_secret_reason(secret: str) -> str | None:
    """Why a secret key is too weak for production, or None when it is acceptable."""
    if secret.strip().lower() in PLACEHOLDER_SECRETS:
        return "it is a placeholder value"
    if len(secret) < MIN_SECRET_KEY_LENGTH:
        return f"it has {len(secret)} characters, at least {MIN_SECRET_KEY_LENGTH} are required"
    if len(set(secret)) < 8:
        return "it repeats too few distinct characters"
    return None


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; raises ``SettingsError`` naming the bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(describe_settings_error(exc)) from None


class SettingsError(Exception):
    """A configuration value that stops the start."""


def describe_settings_error(exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "configuration"
        message = error["msg"].removeprefix("Value error, ")
        lines.append(f"{name}: {message}")
    return "invalid configuration:\n  " + "\n  ".join(lines)


def resolve_secret_key(settings: Settings) -> str:
    """The configured secret key, else the one in ``<data_dir>/secret.key``, generated there (0600) on first run."""
    if settings.secret_key is not None:
        return settings.secret_key.get_secret_value()
    path = private_folder(settings.data_dir) / SECRET_KEY_FILE
    if not path.exists():
        _write_new_secret_key(path)
    return _read_secret_key(path)


def _write_new_secret_key(path: Path) -> None:
    """Write a key beside the file, on disk, then link it into place: the file appears whole or not at all, and
    when replicas start together the first link wins (``link`` never replaces) and everyone reads that key."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{SECRET_KEY_FILE}.")  # mode 0600
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(secrets.token_urlsafe(48) + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _read_secret_key(path: Path) -> str:
    """The key, waiting a little while the file is empty: another replica of an older version created it and has
    not written it yet."""
    deadline = time.monotonic() + SECRET_KEY_WAIT_S
    while not (key := path.read_text(encoding="utf-8").strip()):
        if time.monotonic() > deadline:
            raise SettingsError(f"{path} is empty: delete it to generate a new key (what was sealed with the old "
                                "one is lost), or set LLMWS_SECRET_KEY")
        time.sleep(0.05)
    return key


def ui_cookie_secret(settings: Settings) -> str:
    """The secret the UI signs its cookies with: set on its own, or derived from the server's secret key (so a
    restart keeps everyone logged in, and the key itself is never handed to Panel)."""
    if settings.ui_cookie_secret is not None:
        return settings.ui_cookie_secret.get_secret_value()
    return hmac.new(resolve_secret_key(settings).encode(), b"llmws-ui-cookie", hashlib.sha256).hexdigest()
