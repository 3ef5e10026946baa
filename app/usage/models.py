"""What the usage endpoints answer (msgspec Structs)."""

from __future__ import annotations

import uuid
from datetime import datetime

import msgspec


class UsagePeriod(msgspec.Struct):
    """One hour, day or month. Quantities are decimal strings in display units,
    rounded half up to 6 places (GB-hours and minutes are not finite decimals)."""

    start: datetime
    end: datetime
    compute_gb_hours: str
    storage_gb_hours: str
    build_minutes: str
    bandwidth_gb: str
    custom_domains: int


class UsageHistory(msgspec.Struct):
    project_id: uuid.UUID
    granularity: str
    from_: datetime = msgspec.field(name="from")
    to: datetime = msgspec.field(name="to")
    # Every hour before this instant is counted; later hours are not yet (null: never rolled up).
    as_of: datetime | None = None
    periods: list[UsagePeriod] = msgspec.field(default_factory=list)
