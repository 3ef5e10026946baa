-- waybill.drop_expired_event_partitions: retention of raw events.
--
-- Inputs: p_now (the instant; only the scheduled entry point passes now()) and
-- p_retention_months (keep this many whole months before p_now's month).
-- A monthly usage_events partition is dropped only when all three hold:
--   1. its month ended more than p_retention_months months before p_now's month;
--   2. every event in it has been rolled up (seq <= the rollup watermark), so
--      hourly and daily usage no longer need it;
--   3. its billing month is finalized: no draft billing record for it, and
--      either a record exists or the month had no usage at all;
--   4. no late event can need it: a late event's resource is replayed from
--      its last reset before the event (rollup_hourly), so every resource with
--      time-weighted events in it must have a rolled-up reset in a kept month,
--      no later than the oldest event still accepted (p_now minus the
--      database setting waybill.event_max_age, default 35 days).
-- A partition that fails 2, 3 or 4 is kept and reported, never dropped.
-- Output: jsonb {"dropped": [...], "kept": {"partition": "reason"}}.
-- Side effects: DROP TABLE of those partitions (DDL: no row trigger fires; raw
-- events are never deleted row by row). event_keys rows stay, so a replay of a
-- dropped event is still recognised (and refused as too old before that).
-- Errors: 22023 when p_retention_months < 2 (events up to 35 days old may still
-- arrive for the previous month).
CREATE OR REPLACE FUNCTION waybill.drop_expired_event_partitions(p_now timestamptz,
                                                                 p_retention_months integer)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_partition regclass;
    v_month     date;
    v_cutoff    date;
    v_watermark bigint;
    v_dropped   text[] := '{}';
    v_kept      jsonb := '{}';
    v_unrolled  boolean;
    v_needed    boolean;
    v_oldest    timestamptz := p_now - coalesce(
        nullif(current_setting('waybill.event_max_age', true), '')::interval, interval '35 days');
BEGIN
    IF p_retention_months IS NULL OR p_retention_months < 2 THEN
        RAISE EXCEPTION 'event retention must keep at least 2 months, got %', p_retention_months
            USING ERRCODE = '22023';
    END IF;
    v_cutoff := (date_trunc('month', p_now AT TIME ZONE 'UTC')
                 - make_interval(months => p_retention_months))::date;
    SELECT watermark INTO v_watermark FROM waybill.rollup_state;
    FOR v_partition, v_month IN
        SELECT i.inhrelid::regclass,
               to_date(substring(c.relname FROM 'usage_events_(\d{4}_\d{2})$'), 'YYYY_MM')
          FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'waybill.usage_events'::regclass
           AND c.relname ~ '^usage_events_\d{4}_\d{2}$'
         ORDER BY 2
    LOOP
        CONTINUE WHEN v_month >= v_cutoff;
        EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE seq > $1)', v_partition)
           INTO v_unrolled USING coalesce(v_watermark, 0);
        IF v_unrolled THEN
            v_kept := v_kept || jsonb_build_object(v_partition::text, 'events not yet rolled up');
        ELSIF EXISTS (SELECT 1 FROM waybill.billing_records
                       WHERE period_start = v_month AND status = 'draft') THEN
            v_kept := v_kept || jsonb_build_object(v_partition::text, 'billing month still draft');
        ELSIF NOT EXISTS (SELECT 1 FROM waybill.billing_records WHERE period_start = v_month)
              AND EXISTS (SELECT 1 FROM waybill.daily_usage
                           WHERE day >= v_month AND day < (v_month + interval '1 month')::date) THEN
            v_kept := v_kept || jsonb_build_object(v_partition::text, 'billing month not billed yet');
        ELSE
            EXECUTE format($q$
                SELECT EXISTS (
                    SELECT 1 FROM (SELECT DISTINCT e.project_id, e.metering_kind AS kind,
                                          e.resource_type, e.resource_id
                                     FROM %s e
                                    WHERE e.metering_kind IS NOT NULL) r
                     WHERE NOT EXISTS (
                           SELECT 1 FROM waybill.usage_events a
                            WHERE a.project_id = r.project_id AND a.metering_kind = r.kind
                              AND a.resource_type = r.resource_type
                              AND a.resource_id = r.resource_id
                              AND a.metering_value IS NOT NULL  -- a reset
                              AND a.event_time >= $1 AND a.event_time <= $2 AND a.seq <= $3))$q$,
                v_partition) INTO v_needed USING v_cutoff::timestamptz, v_oldest, coalesce(v_watermark, 0);
            IF v_needed THEN
                v_kept := v_kept || jsonb_build_object(v_partition::text,
                    'holds the last reset of a resource that late events may still need');
                CONTINUE;
            END IF;
            v_dropped := v_dropped || v_partition::text;  -- its name, before it goes
            EXECUTE format('DROP TABLE %s', v_partition);
        END IF;
    END LOOP;
    RETURN jsonb_build_object('dropped', to_jsonb(v_dropped), 'kept', v_kept);
END
$$;
