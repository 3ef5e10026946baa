"""GET /api/v1/projects/{project_id}/usage/history (CONTRACT.md section 7).

Two forms: `?months=N` (the last N calendar months, this one included, per
month unless `granularity` says otherwise), or `?from=...&to=...&granularity=`
hour|day|month with bounds on that granularity's boundaries (UTC). Usage comes
from the hourly rollup; `as_of` says how far it reaches.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any, Literal

from litestar import Request, Router, get
from litestar.params import FromPath, FromQuery, QueryParameter

from app.auth import require_project_reader
from app.errors import Unprocessable
from app.usage import queries
from app.usage.models import UsageHistory, UsagePeriod

Granularity = Literal["hour", "day", "month"]
DEFAULT_MONTHS = 6
# Most periods one answer holds, per granularity.
MAX_PERIODS: dict[str, int] = {"hour": 31 * 24, "day": 366, "month": 120}
_SIX_PLACES = Decimal("0.000001")


def display(value: Decimal) -> str:
    """Half up to 6 decimal places, without trailing zeros or exponent."""
    rounded = value.quantize(_SIX_PLACES, rounding=ROUND_HALF_UP).normalize()
    return format(rounded, "f")


def month_start(moment: datetime, back: int = 0) -> datetime:
    index = moment.year * 12 + moment.month - 1 - back
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def truncate(moment: datetime, granularity: str) -> datetime:
    moment = moment.astimezone(UTC)
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return month_start(moment)


def periods_between(start: datetime, end: datetime, granularity: str) -> int:
    if granularity == "month":
        return (end.year - start.year) * 12 + end.month - start.month
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    return int((end - start) / step)


def window(months: int | None, start: datetime | None, end: datetime | None,
           granularity: str | None, now: datetime) -> tuple[datetime, datetime, str]:
    """The [from, to) window and granularity a query asks for, or Unprocessable."""
    if months is not None and not 1 <= months <= MAX_PERIODS["month"]:
        raise Unprocessable(f"months: between 1 and {MAX_PERIODS['month']}")
    if months is not None and (start is not None or end is not None):
        raise Unprocessable("give either months or from/to, not both")
    if start is None and end is None:
        count = DEFAULT_MONTHS if months is None else months
        granularity = granularity or "month"
        start, end = month_start(now, count - 1), month_start(now, -1)
    elif start is None or end is None:
        raise Unprocessable("from and to go together")
    else:
        granularity = granularity or "day"
        for name, value in (("from", start), ("to", end)):
            if value.tzinfo is None:
                raise Unprocessable(f"{name}: give an offset (e.g. Z)")
            if truncate(value, granularity) != value:
                raise Unprocessable(f"{name}: must be the start of a UTC {granularity}")
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if end <= start:
            raise Unprocessable("to must be after from")
    if periods_between(start, end, granularity) > MAX_PERIODS[granularity]:
        raise Unprocessable(f"at most {MAX_PERIODS[granularity]} periods of one {granularity}"
                            " per request")
    return start, end, granularity


@get("/{project_id:uuid}/usage/history")
async def usage_history(
    request: Request[Any, Any, Any],
    project_id: FromPath[uuid.UUID],
    months: FromQuery[int | None] = None,
    from_: Annotated[datetime | None, QueryParameter(name="from")] = None,
    to: FromQuery[datetime | None] = None,
    granularity: FromQuery[Granularity | None] = None,
) -> UsageHistory:
    """Usage per period, zeros included, oldest first."""
    start, end, grain = window(months, from_, to, granularity, datetime.now(UTC))
    async with request.app.state.pool.connection() as conn:
        rows = await (await conn.execute(queries.USAGE_SERIES, {
            "project": project_id, "from": start, "to": end, "granularity": grain})).fetchall()
        as_of = (await (await conn.execute(queries.USAGE_AS_OF)).fetchone())[0]
    return UsageHistory(
        project_id=project_id, granularity=grain, from_=start, to=end, as_of=as_of,
        periods=[UsagePeriod(start=r[0], end=r[1], compute_gb_hours=display(r[2]),
                             storage_gb_hours=display(r[3]), build_minutes=display(r[4]),
                             bandwidth_gb=display(r[5]), custom_domains=r[6]) for r in rows])


router = Router(path="/api/v1/projects", route_handlers=[usage_history],
                guards=[require_project_reader], tags=["usage"])
