-- waybill.billing_usage_as_of: how fresh the usage billing reads is.
--
-- Output: the instant before which every hour is rolled up into hourly_usage
-- (metering's rollup_state.closed_until: NULL while a shard has not closed an
-- hour yet), or, on a database whose metering has never closed an hour (or has
-- no metering bookkeeping), the end of the latest hour present in hourly_usage
-- (NULL if none).
-- Side effects: none. Errors: none. SECURITY DEFINER: the service role need not
-- read metering's bookkeeping.
CREATE OR REPLACE FUNCTION waybill.billing_usage_as_of() RETURNS timestamptz
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_as_of   timestamptz;
    v_metered boolean;
BEGIN
    IF to_regclass('waybill.rollup_shards') IS NOT NULL THEN
        EXECUTE 'SELECT s.closed_until, EXISTS (SELECT 1 FROM waybill.rollup_shards r
                                                 WHERE r.closed_until IS NOT NULL)
                   FROM waybill.rollup_state s' INTO v_as_of, v_metered;
        IF v_metered THEN
            RETURN v_as_of;  -- the other shards' hours are no measure of a lagging one's
        END IF;
    END IF;
    SELECT max(hour) + interval '1 hour' INTO v_as_of FROM waybill.hourly_usage;
    RETURN v_as_of;
END
$$;
