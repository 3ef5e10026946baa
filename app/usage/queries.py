"""The SQL the usage endpoints send: calls to the functions in sql/functions."""

from __future__ import annotations

USAGE_SERIES = """
SELECT period_start, period_end, compute_gb_hours, storage_gb_hours, build_minutes,
       bandwidth_gb, custom_domains
  FROM waybill.usage_series(%(project)s, %(from)s, %(to)s, %(granularity)s)
"""

USAGE_AS_OF = "SELECT waybill.usage_as_of()"
