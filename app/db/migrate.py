"""Schema migration: yoyo migrations, then the repeatable SQL, then pg_cron jobs.

Migrations (`sql/migrations`) are forward-only and hold tables, types and roles.
Functions, views and grants (`sql/functions`, `sql/views`, `sql/grants`) are
repeatable: every `migrate` re-applies all of them in file-name order, in one
transaction, so they always match the code. yoyo's post-apply hook only runs
when a migration is pending, which is why this does not rely on it.

pg_cron schedules (`sql/schedules`) run in pg_cron's own database, which may not
be Waybill's: `cron.database_name` says where it is, and jobs reach Waybill's
database with `cron.schedule_in_database`. Each file is a statement with the
parameters `%(database)s` (the Waybill database) and `%(prefix)s` (job names are
`<prefix><job>`, unique per database, so re-applying replaces rather than adds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from yoyo import get_backend, read_migrations

SQL_DIR = Path(__file__).resolve().parents[2] / "sql"
REPEATABLE_DIRS = ("functions", "views", "grants")
# Any fixed number: serializes concurrent `migrate` runs on one database.
_REPEATABLE_LOCK = 0x57A7B111


@dataclass
class MigrateReport:
    applied: list[str] = field(default_factory=list)
    repeatables: int = 0
    schedule: str = ""


def _yoyo_url(url: str) -> str:
    params = conninfo_to_dict(url)
    user = params.get("user", "postgres")
    password = f":{params['password']}" if params.get("password") else ""
    host = params.get("host", "127.0.0.1")
    port = params.get("port", "5432")
    return f"postgresql+psycopg://{user}{password}@{host}:{port}/{params.get('dbname', user)}"


def repeatable_files() -> list[Path]:
    files: list[Path] = []
    for name in REPEATABLE_DIRS:
        files.extend(sorted((SQL_DIR / name).glob("*.sql")))
    return files


def apply_migrations(url: str) -> list[str]:
    backend = get_backend(_yoyo_url(url))
    migrations = read_migrations(str(SQL_DIR / "migrations"))
    try:
        with backend.lock():
            pending = backend.to_apply(migrations)
            backend.apply_migrations(pending)
    finally:
        backend.connection.close()
    return [m.id for m in pending]


def apply_repeatables(url: str) -> int:
    files = repeatable_files()
    with psycopg.connect(url) as conn, conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_REPEATABLE_LOCK,))
        for path in files:
            conn.execute(path.read_text().encode())
    return len(files)


def apply_schedules(url: str) -> str:
    """Install the pg_cron jobs; return a sentence saying what happened."""
    target = conninfo_to_dict(url)
    database = target.get("dbname") or target.get("user") or "postgres"
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('cron.database_name', true)").fetchone()
    cron_db = row[0] if row else None
    if not cron_db:
        return (
            "pg_cron is not loaded on this server (shared_preload_libraries): no jobs "
            "scheduled; run `waybill aggregate` and `waybill bill` from your own scheduler"
        )
    files = sorted((SQL_DIR / "schedules").glob("*.sql"))
    try:
        with psycopg.connect(make_conninfo(url, dbname=cron_db), autocommit=True) as conn:
            installed = conn.execute(
                "SELECT 1 FROM pg_extension WHERE extname = 'pg_cron'"
            ).fetchone()
            if not installed:
                return (
                    f"pg_cron is loaded but not installed in database {cron_db!r} "
                    "(CREATE EXTENSION pg_cron there): no jobs scheduled"
                )
            for path in files:
                conn.execute(
                    path.read_text().encode(),
                    {"database": database, "prefix": f"waybill:{database}:"},
                )
    except psycopg.Error as exc:
        return f"pg_cron jobs not scheduled: {exc.diag.message_primary or exc}"
    return f"{len(files)} pg_cron schedule file(s) applied in database {cron_db!r}"


def prepare_event_storage(url: str, retention_months: int, max_age: timedelta) -> None:
    """Monthly event partitions around today (a new database need not wait for
    pg_cron), and the retention the scheduled maintenance applies (it keeps a
    month that events up to `max_age` old may still need)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT waybill.ensure_event_partitions(now())")
        for name, value in (("event_retention_months", str(retention_months)),
                            ("event_max_age", f"{int(max_age.total_seconds())} seconds")):
            conn.execute(sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                sql.Identifier(conn.info.dbname), sql.Identifier("waybill", name),
                sql.Literal(value)))


def migrate(url: str, *, schedule: bool = True, event_retention_months: int = 13,
            event_max_age: timedelta = timedelta(days=35)) -> MigrateReport:
    report = MigrateReport()
    report.applied = apply_migrations(url)
    report.repeatables = apply_repeatables(url)
    prepare_event_storage(url, event_retention_months, event_max_age)
    if schedule:
        report.schedule = apply_schedules(url)
    return report
