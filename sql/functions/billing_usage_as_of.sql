-- waybill.billing_usage_as_of: how fresh the usage billing reads is.
--
-- Output: the instant before which every hour is rolled up into hourly_usage
-- (metering's rollup_state.closed_until), or, on a database without metering's
-- bookkeeping, the end of the latest hour present in hourly_usage (NULL if none).
-- Side effects: none. Errors: none. SECURITY DEFINER: the service role need not
-- read metering's bookkeeping.
CREATE OR REPLACE FUNCTION waybill.billing_usage_as_of() RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_as_of timestamptz;
BEGIN
    IF to_regclass('waybill.rollup_state') IS NOT NULL THEN
        EXECUTE 'SELECT closed_until FROM waybill.rollup_state' INTO v_as_of;
        IF v_as_of IS NOT NULL THEN
            RETURN v_as_of;
        END IF;
    END IF;
    SELECT max(hour) + interval '1 hour' INTO v_as_of FROM waybill.hourly_usage;
    RETURN v_as_of;
END
$$;
