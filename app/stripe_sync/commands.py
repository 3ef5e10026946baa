"""`waybill stripe-sync [--once] [--status] [--retry-failed] [--record ID]`.

Runs the Stripe outbox worker: by default it loops (every --interval seconds)
until interrupted; --once runs one round. --status lists the records that are
not synced (pending, failed, mismatch) with their attempts and last error.
--retry-failed puts rows that gave up back to pending. Without
STRIPE_SECRET_KEY it says Stripe is off and does nothing.
"""

from __future__ import annotations

import argparse
import time
import uuid

import psycopg

from app.cli import command, database_url
from app.config import Settings
from app.stripe_sync import queries
from app.stripe_sync.client import StripeGateway
from app.stripe_sync.sync import StripeSync


def _configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--once", action="store_true", help="one round, then exit")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between rounds")
    parser.add_argument("--status", action="store_true", help="list records not yet synced")
    parser.add_argument("--retry-failed", action="store_true", help="retry rows that gave up")
    parser.add_argument("--record", type=uuid.UUID, help="only this billing record")


@command("stripe-sync", _configure)
def stripe_sync_command(args: argparse.Namespace, settings: Settings) -> int:
    url = database_url(settings)
    if args.status:
        with psycopg.connect(url) as conn:
            for row in conn.execute(queries.STATUS):
                print("\t".join("" if v is None else str(v) for v in row))
        return 0
    if args.retry_failed:
        with psycopg.connect(url, autocommit=True) as conn:
            count = conn.execute(queries.RETRY_FAILED, {"record": args.record}).rowcount
        print(f"{count} failed record(s) back to pending")
    gateway = StripeGateway.from_settings(settings)
    if gateway is None:
        print("Stripe is off (STRIPE_SECRET_KEY is not set): nothing sent")
        return 0
    sync = StripeSync(url, gateway)
    while True:
        report = sync.run_once(record_id=args.record)
        if report.claimed:
            print(f"synced {len(report.synced)}, failed {len(report.failed)}, "
                  f"mismatched {len(report.mismatched)}")
        if args.once:
            return 1 if report.failed or report.mismatched else 0
        time.sleep(args.interval)
