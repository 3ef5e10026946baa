-- pg_cron jobs for the metering rollups, run in pg_cron's database.
-- Parameters: %(database)s (Waybill's database), %(prefix)s (job-name prefix,
-- unique per database). Named jobs: re-applying this file replaces them.
-- hourly: 5 past every hour, hours closed by then; two jobs, which share the
-- shards out between them and so run in parallel (one per core of a small
-- server; add jobs for more). daily: 00:15 UTC, the same for every shard and
-- then the days closed by then. All call the only clock-reading entry point.
SELECT cron.schedule_in_database(%(prefix)s || 'rollup-hourly', '5 * * * *',
           'SELECT waybill.run_scheduled_rollups(''hourly'')', %(database)s),
       cron.schedule_in_database(%(prefix)s || 'rollup-hourly-2', '5 * * * *',
           'SELECT waybill.run_scheduled_rollups(''hourly'')', %(database)s),
       cron.schedule_in_database(%(prefix)s || 'rollup-daily', '15 0 * * *',
           'SELECT waybill.run_scheduled_rollups(''daily'')', %(database)s)
