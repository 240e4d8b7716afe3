"""The ``llmws`` command: serve the API or the UI, chat, migrate the database, manage users and models."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from alembic.util import CommandError as AlembicCommandError
from sqlalchemy.exc import DBAPIError

from api.cli_chat import add_chat_command
from api.cli_models import add_model_commands
from api.services.errors import ServiceError
from api.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

T = TypeVar("T")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        settings = load_settings()
        return args.handler(settings, args)
    except SettingsError as exc:
        print(f"llmws: {exc}", file=sys.stderr)
        return 2
    except (ServiceError, CommandError, AlembicCommandError) as exc:
        print(f"llmws: {exc}", file=sys.stderr)
        return 1
    except (DBAPIError, OSError) as exc:
        print(f"llmws: cannot use the database: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1


class CommandError(Exception):
    """A command that cannot go on; its message says what to do."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llmws", description="LLMWS: a self-hosted LLM gateway.")
    commands = parser.add_subparsers(title="commands")

    serve = commands.add_parser("serve", help="run the API server")
    serve.add_argument("--host", help="bind address (default LLMWS_HOST)")
    serve.add_argument("--port", type=int, help="port (default LLMWS_PORT)")
    serve.set_defaults(handler=_serve)

    ui = commands.add_parser("ui", help="run the Panel UI (panel serve)")
    ui.add_argument("--port", type=int, help="port (default LLMWS_UI_PORT)")
    ui.set_defaults(handler=_ui)

    add_chat_command(commands)
    db = commands.add_parser("db", help="database migrations").add_subparsers(title="db commands")
    upgrade = db.add_parser("upgrade", help="migrate to the newest schema (or a given revision)")
    upgrade.add_argument("revision", nargs="?", default="head")
    upgrade.set_defaults(handler=_db_upgrade)
    downgrade = db.add_parser("downgrade", help="migrate back to a revision ('base' empties the database)")
    downgrade.add_argument("revision")
    downgrade.set_defaults(handler=_db_downgrade)
    db.add_parser("current", help="show the database's revision").set_defaults(handler=_db_current)

    add_model_commands(commands)

    users = commands.add_parser("users", help="manage users").add_subparsers(title="users commands")
    create = users.add_parser("create", help="create a user (asks for the password)")
    create.add_argument("username")
    create.add_argument("--admin", action="store_true", help="give the admin role")
    create.add_argument("--email")
    create.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    create.set_defaults(handler=_users_create)
    users.add_parser("list", help="list users").set_defaults(handler=_users_list)
    set_password = users.add_parser("set-password", help="set a user's password and end their logins")
    set_password.add_argument("username")
    set_password.add_argument("--password-stdin", action="store_true")
    set_password.set_defaults(handler=_users_set_password)
    for name, active in (("disable", False), ("enable", True)):
        command = users.add_parser(name, help=f"{name} a user")
        command.add_argument("username")
        command.set_defaults(handler=_users_set_active, active=active)
    return parser


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from api.app import create_app
    from api.graceful import serve
    from api.logging_config import configure_logging

    if args.host:
        settings = settings.model_copy(update={"host": args.host})
    if args.port:
        settings = settings.model_copy(update={"port": args.port})
    configure_logging(settings)
    _require_current_schema(settings)
    serve(create_app(settings), host=settings.host, port=settings.port, grace_s=settings.shutdown_grace_s)
    return 0


def _ui(settings: Settings, args: argparse.Namespace) -> int:
    os.execve(sys.executable, ui_command(settings, args.port), ui_environment(settings))  # noqa: S606 (a fixed list)


def ui_command(settings: Settings, port: int | None = None) -> list[str]:
    """``panel serve`` (with security headers: ui/serve.py) over every page script, with the API-backed login
    (ui/auth.py)."""
    ui_dir = Path(__file__).resolve().parent.parent / "ui"
    ui_port = str(port or settings.ui_port)
    command = [sys.executable, "-m", "ui.serve", *sorted(str(page) for page in (ui_dir / "pages").glob("*.py")),
               "--port", ui_port, "--address", settings.host, "--index", "chat",
               "--auth-module", str(ui_dir / "auth.py"), "--num-procs", "1"]
    for origin in dict.fromkeys(("localhost", "127.0.0.1", settings.host)):
        command += ["--allow-websocket-origin", f"{origin}:{ui_port}"]
    return command


def ui_environment(settings: Settings) -> dict[str, str]:
    """The cookie secret goes to Panel through its environment, not its command line (which ``ps`` shows); the
    API's address goes along as settled here, so the UI looks where the API listens."""
    from api.settings import ui_cookie_secret

    return {**os.environ, "PANEL_COOKIE_SECRET": ui_cookie_secret(settings), "LLMWS_API_URL": settings.api_url}


def _db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from db import migrate

    migrate.upgrade(settings.resolved_database_url, args.revision)
    print(f"database at {_current_revision(settings)}")
    return 0


def _db_downgrade(settings: Settings, args: argparse.Namespace) -> int:
    from db import migrate

    migrate.downgrade(settings.resolved_database_url, args.revision)
    print(f"database at {_current_revision(settings) or 'base (empty)'}")
    return 0


def _db_current(settings: Settings, _args: argparse.Namespace) -> int:
    from db import migrate

    current = _current_revision(settings)
    heads = migrate.head_revisions()
    status = "up to date" if current in heads else "behind: run `llmws db upgrade`"
    print(f"{current or 'base (empty)'} ({status})")
    return 0


def _current_revision(settings: Settings) -> str | None:
    from db.migrate import schema_state
    from db.session import create_engine

    async def read() -> str | None:
        engine = create_engine(settings.resolved_database_url)
        try:
            return (await schema_state(engine)).current
        finally:
            await engine.dispose()

    return asyncio.run(read())


def _require_current_schema(settings: Settings) -> None:
    asyncio.run(_in_session(settings, lambda _session: asyncio.sleep(0)))


async def _in_session(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run ``work`` in one committed transaction, on a database whose schema is current."""
    from db.migrate import SchemaNotCurrent, schema_state
    from db.session import create_engine, create_sessionmaker

    engine = create_engine(settings.resolved_database_url)
    try:
        state = await schema_state(engine)
        if not state.at_head:
            raise CommandError(str(SchemaNotCurrent(state)))
        async with create_sessionmaker(engine)() as session:
            result = await work(session)
            await session.commit()
            return result
    finally:
        await engine.dispose()


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat it: ") != password:
        raise CommandError("the two passwords differ")
    return password


def _users_create(settings: Settings, args: argparse.Namespace) -> int:
    from api.services.accounts.users import create_user
    from db.models import Role

    password = _read_password(args.password_stdin)
    role = Role.ADMIN if args.admin else Role.USER
    user = asyncio.run(_in_session(
        settings, lambda session: create_user(session, args.username, password, role=role, email=args.email)))
    print(f"created {user.role} '{user.username}' (id {user.id})")
    return 0


def _users_list(settings: Settings, _args: argparse.Namespace) -> int:
    from api.services.accounts.users import list_users

    users = asyncio.run(_in_session(settings, lambda session: list_users(session, limit=100_000)))
    print(f"{'id':>5}  {'username':<24} {'role':<6} {'active':<6} last login")
    for user in users:
        last = user.last_login_at.isoformat(timespec="seconds") if user.last_login_at else "never"
        print(f"{user.id:>5}  {user.username:<24} {user.role:<6} {'yes' if user.is_active else 'no':<6} {last}")
    return 0


def _users_set_password(settings: Settings, args: argparse.Namespace) -> int:
    from api.services.accounts.users import require_user_by_username, set_password

    password = _read_password(args.password_stdin)

    async def work(session: AsyncSession) -> None:
        await set_password(session, await require_user_by_username(session, args.username), password)

    asyncio.run(_in_session(settings, work))
    print(f"password of '{args.username}' changed; their logins were ended")
    return 0


def _users_set_active(settings: Settings, args: argparse.Namespace) -> int:
    from api.services.accounts.users import require_user_by_username, update_user

    async def work(session: AsyncSession) -> None:
        await update_user(session, await require_user_by_username(session, args.username), is_active=args.active)

    asyncio.run(_in_session(settings, work))
    print(f"'{args.username}' {'enabled' if args.active else 'disabled'}")
    return 0
