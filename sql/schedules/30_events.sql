-- pg_cron job for raw-event upkeep, run in pg_cron's database.
-- Parameters: %(database)s, %(prefix)s (see app/db/migrate.py). Daily at 00:30
-- UTC: monthly partitions ahead of time, then retention of finalized months.
SELECT cron.schedule_in_database(%(prefix)s || 'event-maintenance', '30 0 * * *',
           'SELECT waybill.run_event_maintenance()', %(database)s)
