-- analytics.monthly_usage: usage per project per calendar month (UTC), summed
-- from analytics.daily_usage (so a month in progress holds its rolled-up days).
-- Columns: project_id, month (first day), the display and base units of
-- daily_usage; custom_domains is the month's maximum; storage_gb_months divides
-- storage GB-hours by the hours in that month.
CREATE OR REPLACE VIEW analytics.monthly_usage AS
SELECT d.project_id, date_trunc('month', d.day)::date AS month,
       sum(d.compute_gb_seconds) / 3600 AS compute_gb_hours,
       sum(d.storage_gb_seconds) / 3600 AS storage_gb_hours,
       sum(d.storage_gb_seconds) / 3600
           / (extract(day FROM date_trunc('month', d.day) + interval '1 month'
                            - date_trunc('month', d.day)) * 24) AS storage_gb_months,
       sum(d.build_seconds) / 60 AS build_minutes,
       sum(d.bandwidth_gb) AS bandwidth_gb,
       max(d.custom_domains) AS custom_domains,
       sum(d.compute_gb_seconds) AS compute_gb_seconds,
       sum(d.storage_gb_seconds) AS storage_gb_seconds,
       sum(d.build_seconds) AS build_seconds
  FROM waybill.daily_usage d
 GROUP BY d.project_id, date_trunc('month', d.day);
COMMENT ON VIEW analytics.monthly_usage IS
    'Usage per project per calendar month (UTC), summed from daily usage. See docs/metering.md.';
