-- analytics.project_usage_summary (the seed's project_usage_summary): usage of
-- every project in the current calendar month (UTC) so far, from hourly usage.
-- Columns: project_id, period_start, period_end, compute_gb_hours,
-- storage_gb_hours, build_minutes, bandwidth_gb, custom_domains (max so far),
-- as_of (every hour before it is counted). Reads the clock: "current" is now().
CREATE OR REPLACE VIEW analytics.project_usage_summary AS
WITH period AS (
    SELECT date_trunc('month', now(), 'UTC') AS period_start,
           ((date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')
               AT TIME ZONE 'UTC') AS period_end
)
SELECT h.project_id, p.period_start, p.period_end,
       sum(h.compute_gb_seconds) / 3600 AS compute_gb_hours,
       sum(h.storage_gb_seconds) / 3600 AS storage_gb_hours,
       sum(h.build_seconds) / 60 AS build_minutes,
       sum(h.bandwidth_gb) AS bandwidth_gb,
       max(h.custom_domains) AS custom_domains,
       (SELECT s.closed_until FROM waybill.rollup_state s) AS as_of
  FROM period p
  JOIN waybill.hourly_usage h ON h.hour >= p.period_start AND h.hour < p.period_end
 GROUP BY h.project_id, p.period_start, p.period_end;
COMMENT ON VIEW analytics.project_usage_summary IS
    'Current-month usage per project so far, and how fresh it is (as_of). See docs/metering.md.';
