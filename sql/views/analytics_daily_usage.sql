-- analytics.daily_usage: usage per project per UTC day, from the daily rollup
-- (days whose hours are all closed; the daily job runs after midnight UTC).
-- Columns as analytics.hourly_usage, with day (date, UTC) instead of hour.
CREATE OR REPLACE VIEW analytics.daily_usage AS
SELECT d.project_id, d.day,
       d.compute_gb_seconds / 3600 AS compute_gb_hours,
       d.storage_gb_seconds / 3600 AS storage_gb_hours,
       d.build_seconds / 60 AS build_minutes,
       d.bandwidth_gb, d.custom_domains,
       d.compute_gb_seconds, d.storage_gb_seconds, d.build_seconds, d.computed_at
  FROM waybill.daily_usage d;
COMMENT ON VIEW analytics.daily_usage IS
    'Usage per project per UTC day, rolled up from hourly usage. See docs/metering.md.';
