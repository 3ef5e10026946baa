"""`waybill aggregate [--until TIMESTAMP]`: the pg_cron rollups, run by hand.

For databases without pg_cron and for backfills. It calls the same SQL functions
as the scheduled jobs, with an explicit window: hours before --until (default:
now, truncated to the hour) and the days they close. The shards run in
parallel sessions, one each.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import psycopg

from app.cli import command, database_url
from app.config import Settings


def parse_until(text: str | None, now: datetime | None = None) -> datetime:
    """--until as an hour boundary (UTC); a naive timestamp is read as UTC."""
    if text is None:
        moment = now or datetime.now(UTC)
    else:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def aggregate(url: str, until: datetime) -> dict[str, object]:
    """Roll up every shard's hours before `until`, then the days they close.

    The shards run at once, each in a session of its own: its hourly rollup,
    then its daily rollup, each in a transaction (READ COMMITTED, the default).
    Returns {"hourly": [each shard's summary], "daily": [each shard's summary]}.
    """
    with psycopg.connect(url) as conn:
        shards = [row[0] for row in conn.execute(
            "SELECT shard FROM waybill.rollup_shards ORDER BY shard")]

    def roll_up(shard: int) -> tuple[object, object]:
        with psycopg.connect(url, autocommit=True) as conn:
            hourly = conn.execute("SELECT waybill.rollup_hourly(%s, p_shard => %s)",
                                  (until, shard)).fetchone()
            daily = conn.execute("SELECT waybill.rollup_daily(%s, p_shard => %s)",
                                 (until.astimezone(UTC).date(), shard)).fetchone()
        return (hourly[0] if hourly else None), (daily[0] if daily else None)

    with ThreadPoolExecutor(max_workers=len(shards) or 1) as pool:
        runs = list(pool.map(roll_up, shards))
    return {"hourly": [run[0] for run in runs], "daily": [run[1] for run in runs]}


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--until", metavar="TIMESTAMP",
                        help="ISO 8601 instant; hours before its hour are computed "
                             "(default: now, truncated to the hour)")


@command("aggregate", _configure)
def aggregate_command(args: argparse.Namespace, settings: Settings) -> int:
    try:
        until = parse_until(args.until)
    except ValueError:
        print(f"waybill aggregate: --until {args.until!r} is not an ISO 8601 timestamp",
              file=sys.stderr)
        return 2
    result = aggregate(database_url(settings), until)
    print(json.dumps(result, default=str))
    return 0
