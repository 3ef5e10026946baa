-- waybill.ensure_event_partitions: create the monthly usage_events partitions
-- for the months around an instant.
--
-- Inputs: p_now (the instant; only the scheduled entry point passes now()),
-- p_months_ahead (default 3). Creates the partitions from two months before
-- p_now's month (ingestion accepts events up to EVENT_MAX_AGE = 35 days old)
-- through p_months_ahead months after it; existing ones are left alone.
-- Output: the names of the partitions created. Side effects: DDL.
-- Errors: a month that already has rows in the DEFAULT partition cannot get a
-- partition (PostgreSQL refuses); running this ahead of time prevents that.
CREATE OR REPLACE FUNCTION waybill.ensure_event_partitions(p_now timestamptz,
                                                           p_months_ahead integer DEFAULT 3)
RETURNS text[]
LANGUAGE plpgsql AS $$
DECLARE
    v_month   date;
    v_name    text;
    v_created text[] := '{}';
BEGIN
    FOR v_month IN
        SELECT generate_series(date_trunc('month', p_now AT TIME ZONE 'UTC') - interval '2 months',
                               date_trunc('month', p_now AT TIME ZONE 'UTC')
                                   + make_interval(months => p_months_ahead),
                               interval '1 month')::date
    LOOP
        v_name := 'usage_events_' || to_char(v_month, 'YYYY_MM');
        IF to_regclass(format('waybill.%I', v_name)) IS NULL THEN
            EXECUTE format(
                'CREATE TABLE waybill.%I PARTITION OF waybill.usage_events FOR VALUES FROM (%L) TO (%L)',
                v_name, (v_month::timestamp AT TIME ZONE 'UTC'),
                ((v_month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
            v_created := v_created || v_name;
        END IF;
    END LOOP;
    RETURN v_created;
END
$$;
