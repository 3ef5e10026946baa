-- pg_cron: billing for the month that just closed. Every hour at :20 (after the
-- hourly rollup at :05): inside the grace period after a month ends it recomputes
-- that month's drafts (late usage); after it, it finalizes them once; otherwise it
-- does nothing. Parameters: %(prefix)s (job name prefix), %(database)s (Waybill's
-- database). Re-applying replaces the job (same name).
SELECT cron.schedule_in_database(%(prefix)s || 'billing', '20 * * * *',
                                 'SELECT waybill.run_scheduled_billing()', %(database)s);
