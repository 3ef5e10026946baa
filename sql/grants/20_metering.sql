-- Grants for metering. Repeatable: re-applied on every migrate.
-- waybill_analyst reads the analytics views and nothing else: the views, owned
-- by the migrating role, read the private tables on its behalf.
-- waybill_app (the API) reads usage through the functions and views below; the
-- rollups run as the owner (pg_cron, `waybill aggregate`), never as the app.
GRANT USAGE ON SCHEMA analytics TO waybill_analyst, waybill_app;
GRANT SELECT ON analytics.hourly_usage, analytics.daily_usage, analytics.monthly_usage,
    analytics.project_usage_summary, analytics.metering_anomalies TO waybill_analyst, waybill_app;
GRANT SELECT ON waybill.rollup_state TO waybill_app;
GRANT EXECUTE ON FUNCTION waybill.usage_as_of(), waybill.usage_between(uuid, timestamptz, timestamptz),
    waybill.usage_series(uuid, timestamptz, timestamptz, text) TO waybill_app;
-- Functions are executable by PUBLIC by default; the rollups are not for readers.
REVOKE EXECUTE ON FUNCTION waybill.rollup_hourly(timestamptz, interval, integer),
    waybill.rollup_daily(date, integer), waybill.run_scheduled_rollups(text),
    waybill.recompute_usage_from_scratch(timestamptz), waybill.lock_rollup_shard(integer, boolean)
    FROM PUBLIC;
