"""The `waybill` command line. Every command runs the same code as the service.

    waybill dev                     embedded database, migrations, API (foreground)
    waybill db up|down|url          the embedded PostgreSQL cluster
    waybill migrate [--no-schedule] migrations, repeatable SQL, pg_cron jobs
    waybill serve                   the API on API_HOST:API_PORT
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
from collections.abc import Callable

from app.config import Settings
from app.db.cluster import Cluster, ClusterError
from app.observability import configure_logging

log = logging.getLogger("waybill.cli")
Command = Callable[[argparse.Namespace, Settings], int]
Configure = Callable[[argparse.ArgumentParser], object]  # adds the command's arguments
COMMANDS: dict[str, tuple[Command, Configure]] = {}


def command(name: str, configure: Configure = lambda _: None) -> Callable[[Command], Command]:
    def register(func: Command) -> Command:
        COMMANDS[name] = (func, configure)
        return func
    return register


def database_url(settings: Settings) -> str:
    """DATABASE_URL when set; otherwise the embedded cluster, started if needed."""
    return settings.database_url or Cluster.default().up()


@command("db", lambda p: p.add_argument("action", choices=["up", "down", "url"]))
def db_command(args: argparse.Namespace, settings: Settings) -> int:
    cluster = Cluster.default()
    if args.action == "up":
        print(cluster.up())
    elif args.action == "down":
        cluster.down()
    else:
        print(cluster.url())
    return 0


def _run_migrate(url: str, schedule: bool, settings: Settings) -> None:
    from app.db.migrate import migrate

    report = migrate(url, schedule=schedule,
                     event_retention_months=settings.event_retention_months,
                     event_max_age=settings.event_max_age)
    print(f"migrations applied: {', '.join(report.applied) or 'none pending'}; "
          f"repeatable files: {report.repeatables}")
    if report.schedule:
        print(report.schedule)


@command("migrate", lambda p: p.add_argument("--no-schedule", action="store_true",
                                             help="do not install pg_cron jobs"))
def migrate_command(args: argparse.Namespace, settings: Settings) -> int:
    _run_migrate(database_url(settings), schedule=not args.no_schedule, settings=settings)
    return 0


def _serve(settings: Settings, url: str) -> None:
    import uvicorn

    # Worker processes build the app themselves, from the environment.
    os.environ["DATABASE_URL"] = url
    uvicorn.run("app.web:create_app", factory=True, workers=settings.api_workers,
                host=settings.api_host, port=settings.api_port, log_config=None,
                access_log=False, timeout_graceful_shutdown=5)


@command("serve")
def serve_command(args: argparse.Namespace, settings: Settings) -> int:
    _serve(settings, database_url(settings))
    return 0


@command("dev")
def dev_command(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)
    _run_migrate(url, schedule=True, settings=settings)
    if not settings.internal_api_key:
        # A local run should accept events out of the box; production never gets here
        # because it runs `serve`, which fails closed.
        key_file = Cluster.default().home / "internal-api-key"
        if not key_file.exists():
            key_file.write_text(secrets.token_urlsafe(24))
        os.environ["INTERNAL_API_KEY"] = key_file.read_text().strip()
        settings = Settings.from_env()
        print(f"INTERNAL_API_KEY was not set; this dev run uses {settings.internal_api_key} "
              f"(kept in {key_file})")
    print(f"DATABASE_URL={url}")
    print(f"serving on http://{settings.api_host}:{settings.api_port} (Ctrl-C stops)")
    _serve(settings, url)
    return 0


import app.billing.commands  # noqa: E402, F401 - registers `bill`
import app.stripe_sync.commands  # noqa: E402, F401 - registers `stripe-sync`
import app.usage.commands  # noqa: E402, F401 - registers `aggregate`


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="waybill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (_, configure) in COMMANDS.items():
        configure(sub.add_parser(name))
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_level)
    try:
        return COMMANDS[args.command][0](args, settings)
    except ClusterError as exc:
        print(f"waybill: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
