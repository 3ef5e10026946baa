-- waybill.run_scheduled_billing: the pg_cron entry point, and the only billing
-- function that reads the clock.
--
-- Input: none (now() and billing_settings.grace_period).
-- Output: a short text saying what it did.
-- Side effects: for the month that last closed: within the grace period after
-- its end, (re)computes its drafts so late usage is included; after the grace
-- period, finalizes it (once: a month with records and no draft left is done).
-- Errors: none of its own.
CREATE OR REPLACE FUNCTION waybill.run_scheduled_billing() RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    v_now    timestamptz := now();
    v_to     timestamptz := date_trunc('month', v_now, 'UTC');
    v_period date := ((v_to AT TIME ZONE 'UTC') - interval '1 month')::date;
    v_grace  interval;
    v_count  integer;
BEGIN
    SELECT grace_period INTO v_grace FROM waybill.billing_settings;
    IF EXISTS (SELECT 1 FROM waybill.billing_records WHERE period_start = v_period AND status <> 'draft')
       AND NOT EXISTS (SELECT 1 FROM waybill.billing_records WHERE period_start = v_period AND status = 'draft')
    THEN
        RETURN format('%s already finalized', to_char(v_period, 'YYYY-MM'));
    END IF;
    IF v_now < v_to + v_grace THEN
        v_count := waybill.bill_period(v_period, v_now);
        RETURN format('%s: %s draft records computed', to_char(v_period, 'YYYY-MM'), v_count);
    END IF;
    v_count := waybill.finalize_period(v_period, v_now);
    RETURN format('%s: %s records finalized', to_char(v_period, 'YYYY-MM'), v_count);
END
$$;
