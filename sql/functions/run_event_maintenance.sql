-- waybill.run_event_maintenance: the scheduled entry point for raw-event upkeep
-- (pg_cron, daily). The only function here that reads the clock.
--
-- Creates the monthly partitions ahead, then applies retention with the
-- database setting waybill.event_retention_months (set by `waybill migrate`
-- from EVENT_RETENTION_MONTHS; default 13). Output: jsonb {created, retention}.
CREATE OR REPLACE FUNCTION waybill.run_event_maintenance() RETURNS jsonb
LANGUAGE plpgsql AS $$
BEGIN
    RETURN jsonb_build_object(
        'created', to_jsonb(waybill.ensure_event_partitions(now())),
        'retention', waybill.drop_expired_event_partitions(
            now(), coalesce(nullif(current_setting('waybill.event_retention_months', true), '')::integer, 13)));
END
$$;
