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
    """Roll up every shard's hours before `until`, the shards in parallel, then the days.

    Each shard runs in its own session and transaction (READ COMMITTED, the
    default), as the scheduled jobs do; the daily rollup follows once all have
    committed. Returns {"hourly": [each shard's summary], "daily": summary}.
    """
    with psycopg.connect(url) as conn:
        shards = [row[0] for row in conn.execute(
            "SELECT shard FROM waybill.rollup_shards ORDER BY shard")]

    def roll_up(shard: int) -> object:
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT waybill.rollup_hourly(%s, p_shard => %s)",
                               (until, shard)).fetchone()
        return row[0] if row else None

    with ThreadPoolExecutor(max_workers=len(shards) or 1) as pool:
        hourly = list(pool.map(roll_up, shards))
    with psycopg.connect(url) as conn:
        daily = conn.execute("SELECT waybill.rollup_daily(%s)",
                             (until.astimezone(UTC).date(),)).fetchone()
    return {"hourly": hourly, "daily": daily[0] if daily else None}


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
