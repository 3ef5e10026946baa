-- analytics.hourly_usage: usage per project per closed UTC hour.
-- Columns: project_id, hour (start, UTC), compute_gb_hours, storage_gb_hours,
-- build_minutes, bandwidth_gb, custom_domains (most attached at once), and the
-- exact base units (compute_gb_seconds, storage_gb_seconds, build_seconds) that
-- the display units are divided from. Hours with no usage have no row.
CREATE OR REPLACE VIEW analytics.hourly_usage AS
SELECT h.project_id, h.hour,
       h.compute_gb_seconds / 3600 AS compute_gb_hours,
       h.storage_gb_seconds / 3600 AS storage_gb_hours,
       h.build_seconds / 60 AS build_minutes,
       h.bandwidth_gb, h.custom_domains,
       h.compute_gb_seconds, h.storage_gb_seconds, h.build_seconds, h.computed_at
  FROM waybill.hourly_usage h;
COMMENT ON VIEW analytics.hourly_usage IS
    'Usage per project per closed UTC hour (GB-hours, build minutes, GB, max domains). See docs/metering.md.';
