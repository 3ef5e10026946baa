"""`waybill bill --period YYYY-MM [--finalize]`: the scheduled billing functions, by hand.

Without --finalize it (re)computes the month's draft records; with it, it
finalizes them (refused inside the grace period after the month's end). Both
are idempotent: running again changes nothing that is finalized.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date

import psycopg

from app.billing.settings_sync import sync_billing_settings_blocking
from app.cli import command, database_url
from app.config import Settings

_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--period", required=True, help="the month to bill, YYYY-MM (UTC)")
    parser.add_argument("--finalize", action="store_true",
                        help="finalize the month's records (after the grace period)")


@command("bill", _configure)
def bill_command(args: argparse.Namespace, settings: Settings) -> int:
    match = _MONTH.match(args.period)
    if not match:
        print(f"waybill: --period must be YYYY-MM, not {args.period!r}", file=sys.stderr)
        return 2
    period = date(int(match.group(1)), int(match.group(2)), 1)
    function = "finalize_period" if args.finalize else "bill_period"
    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        sync_billing_settings_blocking(conn, settings)
        try:
            with conn.transaction():
                row = conn.execute(f"SELECT waybill.{function}(%s, now())", (period,)).fetchone()
        except psycopg.Error as exc:
            if exc.sqlstate in ("WB409", "WB422"):
                print(f"waybill: {exc.diag.message_primary}", file=sys.stderr)
                return 1
            raise
    count = row[0] if row else 0
    done = "finalized" if args.finalize else "draft records computed"
    print(f"{args.period}: {count} {done}")
    return 0
