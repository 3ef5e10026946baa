-- waybill.recompute_usage_from_scratch: rebuild every derived metering table
-- from usage_events alone, as if no rollup had ever run.
--
-- Input: p_until, an hour boundary: hours before it are computed (days too,
-- when all their hours are). Output: jsonb {hourly, daily}.
-- Side effects: empties resource_current, resource_levels, open_usage,
-- domain_steps, metering_anomalies, hourly_usage, daily_usage and
-- rollup_dirty_days; resets every shard's watermark; reruns the rollups. Holds
-- every shard's rollup lock throughout, so readers in other transactions see
-- the old usage until it commits. Errors: as rollup_hourly.
CREATE OR REPLACE FUNCTION waybill.recompute_usage_from_scratch(p_until timestamptz)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_hourly jsonb;
BEGIN
    PERFORM waybill.lock_rollup_shard(s.shard)
       FROM (SELECT s.shard FROM waybill.rollup_shards s ORDER BY s.shard) s;
    DELETE FROM waybill.resource_current;
    DELETE FROM waybill.resource_levels;
    DELETE FROM waybill.open_usage;
    DELETE FROM waybill.domain_steps;
    DELETE FROM waybill.metering_anomalies;
    DELETE FROM waybill.hourly_usage;
    DELETE FROM waybill.daily_usage;
    DELETE FROM waybill.rollup_dirty_days;
    UPDATE waybill.rollup_shards SET watermark = 0, closed_until = NULL;
    v_hourly := waybill.rollup_hourly(p_until);
    RETURN jsonb_build_object('hourly', v_hourly,
        'daily', waybill.rollup_daily((p_until AT TIME ZONE 'UTC')::date + 1));
END
$$;
