-- Grants for the foundation tables. Repeatable: re-applied on every migrate.
-- The service role may add events and read them back; it can never change or
-- remove one (no UPDATE, DELETE or TRUNCATE is granted, and triggers refuse them
-- for every role).
GRANT USAGE ON SCHEMA waybill TO waybill_app;
REVOKE ALL ON waybill.usage_events, waybill.event_keys FROM waybill_app;
GRANT SELECT, INSERT ON waybill.usage_events, waybill.event_keys TO waybill_app;
GRANT USAGE ON SEQUENCE waybill.usage_events_seq_seq TO waybill_app;
-- /ready compares the applied migrations with those on disk.
GRANT SELECT ON public._yoyo_migration TO waybill_app;
