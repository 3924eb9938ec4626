"""The `clusterport` command: servers, worker, migrations and admin tasks."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.core.cli import CLIError
from app.core.settings import Settings, get_settings, reset_settings

Command = Callable[[argparse.Namespace], int]


def _fail(message: str) -> int:
    print(f"clusterport: {message}", file=sys.stderr)
    return 2


def _prepare(embedded: bool, *, create_data_dir: bool = True) -> Settings:
    """Load settings; in embedded mode fill in the data dir, SQLite file and encryption key.

    `create_data_dir=False` (admin commands) refuses to start from an empty data dir: a new
    one would have no tables and no tokens, which is never what the user meant.
    """
    import app.models  # noqa: F401  (every mapper must be configured before the first query)
    from app.core.crypto import (
        EncryptionKeyError,
        ensure_embedded_key,
        private_data_dir,
        validate_keys,
    )
    from app.core.logging import configure_logging

    settings = get_settings()
    if embedded and not create_data_dir and not settings.sqlite_path.exists():
        raise CLIError(
            f"no clusterport database in {settings.data_dir.resolve()}: run this command in the "
            "directory where `clusterport serve` ran, or set CLUSTERPORT_DATA_DIR to its data "
            "dir (or CLUSTERPORT_DATABASE_URL)."
        )
    if embedded:
        if not settings.database_url:
            private_data_dir(settings.data_dir, settings.sqlite_path)
        if not settings.encryption_keys:
            os.environ["CLUSTERPORT_ENCRYPTION_KEYS"] = ensure_embedded_key(settings.data_dir)
            reset_settings()
            settings = get_settings()
    elif not settings.database_url:
        raise SystemExit(
            _fail("CLUSTERPORT_DATABASE_URL is not set (only `clusterport serve` has a default).")
        )
    try:
        validate_keys(settings)
    except EncryptionKeyError as exc:
        raise SystemExit(_fail(str(exc))) from None
    configure_logging(settings.log_format, settings.log_level)
    return settings


def migrate_database() -> None:
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    command.upgrade(config, "head")


def _bootstrap_admin(settings: Settings) -> None:
    from sqlalchemy import func, select

    from app.auth.models import AccessToken
    from app.auth.service import create_bootstrap_admin_token
    from app.auth.tokens import hash_token
    from app.core.db import session_scope

    preset = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else None
    with session_scope() as session:
        if session.scalar(select(func.count()).select_from(AccessToken)):
            known = preset is None or session.scalar(
                select(AccessToken.id).where(AccessToken.token_hash == hash_token(preset))
            )
            if not known:
                # Said at every start: a silently ignored token means 401s and no clue why.
                print(
                    "CLUSTERPORT_BOOTSTRAP_TOKEN is ignored: the database "
                    f"({_where(settings)}) already has tokens. Create an admin token with "
                    "`uv run clusterport tokens create --admin` (same directory and settings), "
                    "or start from an empty data dir.",
                    file=sys.stderr,
                    flush=True,
                )
            return
        try:
            raw = create_bootstrap_admin_token(session, preset)
        except ValueError as exc:
            raise CLIError(str(exc)) from None
    if preset is None:
        # Printed once, to the terminal only; it is stored as a hash.
        print(f"Admin token (shown once): {raw}", file=sys.stderr, flush=True)


def _where(settings: Settings) -> str:
    return "CLUSTERPORT_DATABASE_URL" if settings.database_url else str(settings.data_dir.resolve())


def _start_worker(settings: Settings) -> object:
    import dramatiq

    import workers

    worker = dramatiq.Worker(workers.broker, worker_threads=settings.worker_threads)
    worker.start()
    return worker


def cmd_serve(args: argparse.Namespace) -> int:
    """Everything in one process; embedded SQLite and in-process broker unless configured."""
    settings = _prepare(embedded=True)
    migrate_database()
    _bootstrap_admin(settings)
    worker = _start_worker(settings)
    try:
        asyncio.run(_run_http(settings, with_agent_server=True))
    finally:
        worker.stop()  # type: ignore[attr-defined]
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    settings = _prepare(embedded=False)
    asyncio.run(_run_http(settings, with_agent_server=False))
    return 0


async def _run_http(settings: Settings, *, with_agent_server: bool) -> None:
    from app.core.serving import make_server, run_servers
    from app.health import create_health_app
    from app.main import create_app

    servers = [
        make_server(create_app(), settings.bind_host, settings.api_port),
        make_server(create_health_app(settings), settings.bind_host, settings.health_port),
    ]
    tasks = []
    agent_server: Any = None
    if with_agent_server:
        from app.agent_server.cli import build_server

        agent_server = build_server()
        tasks.append(lambda stop: agent_server.run(stop, with_health=False))

    async def started() -> None:
        banner = (
            f"clusterport API on http://{settings.bind_host}:{settings.api_port} (docs at /docs), "
        )
        if agent_server is not None:
            await agent_server.listening.wait()
            banner += agent_server.describe() + ", "
        banner += f"health on http://{settings.bind_host}:{settings.health_port}"
        logging.getLogger("clusterport").info(banner)

    await run_servers(servers, tasks, on_started=started)


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _prepare(embedded=False)
    if settings.broker_url is None:
        return _fail("CLUSTERPORT_BROKER_URL is not set; the worker consumes from RabbitMQ.")
    worker = _start_worker(settings)

    async def run() -> None:
        from app.core.serving import make_server, run_servers
        from app.health import create_health_app

        await run_servers(
            [
                make_server(
                    create_health_app(settings, needs_broker=True),
                    settings.bind_host,
                    settings.health_port,
                )
            ]
        )

    try:
        asyncio.run(run())
    finally:
        worker.stop()  # type: ignore[attr-defined]
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    _prepare(embedded=False)
    migrate_database()
    print("database is at the latest revision", file=sys.stderr)
    return 0


def cmd_tokens_create(args: argparse.Namespace) -> int:
    from app.auth.models import Role
    from app.auth.service import new_token
    from app.core.db import session_scope

    if not args.admin:
        return _fail("only --admin tokens are created here; use the API for project tokens.")
    _prepare(embedded=not get_settings().database_url, create_data_dir=False)
    with session_scope() as session:
        token, raw = new_token(name=args.name, role=Role.admin, project_id=None)
        session.add(token)
    print(raw)
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from app.main import create_app

    document = json.dumps(create_app().openapi(), indent=2, sort_keys=True) + "\n"
    target = Path(args.output)
    if args.check:
        if not target.exists() or target.read_text() != document:
            return _fail(f"{target} is stale; run `clusterport openapi` and commit it.")
        return 0
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document)
    return 0


def cmd_reencrypt(args: argparse.Namespace) -> int:
    from app.core.db import session_scope
    from app.core.reencrypt import reencrypt_all

    _prepare(embedded=not get_settings().database_url, create_data_dir=False)
    with session_scope() as session:
        count = reencrypt_all(session)
    print(f"re-encrypted {count} secrets with the first key", file=sys.stderr)
    return 0


def cmd_keys_generate(args: argparse.Namespace) -> int:
    from app.core.crypto import generate_key

    print(generate_key())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="clusterport", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, func: Command, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func)
        return p

    add("serve", cmd_serve, "Run everything in one process (embedded SQLite by default).")
    add("api", cmd_api, "Run the REST API and its health port.")
    add("worker", cmd_worker, "Run a Dramatiq worker consuming from RabbitMQ.")
    add("migrate", cmd_migrate, "Upgrade the database to the latest revision.")
    tokens = sub.add_parser("tokens", help="Manage API tokens.").add_subparsers(
        dest="tokens_command", required=True
    )
    create = tokens.add_parser("create", help="Create a token and print it once.")
    create.add_argument("--admin", action="store_true", help="an instance admin token")
    create.add_argument("--name", default="cli")
    create.set_defaults(func=cmd_tokens_create)
    openapi = add("openapi", cmd_openapi, "Write (or --check) the OpenAPI document.")
    openapi.add_argument("--output", default="api_schema/openapi.json")
    openapi.add_argument("--check", action="store_true", help="fail if the file is stale")
    add("reencrypt", cmd_reencrypt, "Re-encrypt every stored secret with the first key.")
    keys = sub.add_parser("keys", help="Encryption keys.").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("generate", help="Print a new encryption key.").set_defaults(
        func=cmd_keys_generate
    )
    from app.agent_server.cli import register_commands
    from app.clusters.cli import add_parser as add_cluster_parser
    from app.gitops.cli import add_deployments_parser
    from app.providers.aws.cli import add_wait_parser

    register_commands(sub)
    clusters = sub.add_parser("clusters", help="Clusters.").add_subparsers(
        dest="clusters_command", required=True
    )
    add_wait_parser(clusters)
    add_cluster_parser(clusters)
    add_deployments_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        result: int = args.func(args)
    except CLIError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if os.environ.get("CLUSTERPORT_DEBUG"):
            raise
        return _fail(_explain(exc))
    return result


def _explain(exc: Exception) -> str:
    """One line for a failure nobody caught, without its message when that may hold secrets."""
    from sqlalchemy.exc import DBAPIError, OperationalError

    if isinstance(exc, OperationalError | DBAPIError):
        return (
            "the database failed or cannot be reached: check CLUSTERPORT_DATABASE_URL and that "
            "the server runs (CLUSTERPORT_DEBUG=1 shows the traceback)."
        )
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc} ({exc.filename or 'set CLUSTERPORT_DEBUG=1 for details'})"
    return (
        f"unexpected {type(exc).__name__}; run again with CLUSTERPORT_DEBUG=1 for the traceback "
        "and report it."
    )


if __name__ == "__main__":
    sys.exit(main())
