-- waybill.run_scheduled_rollups: the entry point pg_cron calls; the only rollup
-- code that reads the clock.
--
-- Input: p_job, 'hourly' (hours closed by now) or 'daily' (the same, then the
-- days closed by now). Output: jsonb {hourly, daily} summaries; hourly: the
-- summaries of the shards this run rolled up.
-- 'hourly' rolls up every shard no other session is rolling up right now and
-- skips the others: several hourly jobs started together share the shards out
-- between them and run in parallel (docs/metering.md, "Shards"). A shard
-- skipped is held by another session: another hourly run, bringing it to the
-- same hour; or another rollup (a daily run, `waybill aggregate` with an
-- earlier --until), after which it catches up at the next hourly run. Waiting
-- for it instead could deadlock with a run that holds it and waits for ours.
-- 'daily' waits for every shard, then rolls up every shard's days.
-- Side effects: those of rollup_hourly and rollup_daily. Errors: 22023 for an
-- unknown p_job.
CREATE OR REPLACE FUNCTION waybill.run_scheduled_rollups(p_job text DEFAULT 'hourly')
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_until  timestamptz := date_trunc('hour', clock_timestamp(), 'UTC');
    v_shard  integer;
    v_hourly jsonb := '[]';
    v_daily  jsonb;
BEGIN
    IF p_job NOT IN ('hourly', 'daily') THEN
        RAISE EXCEPTION 'run_scheduled_rollups: unknown job %', p_job USING ERRCODE = '22023';
    END IF;
    IF p_job = 'daily' THEN
        v_hourly := waybill.rollup_hourly(v_until);
        v_daily := waybill.rollup_daily((v_until AT TIME ZONE 'UTC')::date);
        RETURN jsonb_build_object('hourly', v_hourly, 'daily', v_daily);
    END IF;
    FOR v_shard IN SELECT s.shard FROM waybill.rollup_shards s ORDER BY s.shard LOOP
        -- the shard's lock, taken first without waiting (a NULL row: held)
        IF (waybill.lock_rollup_shard(v_shard, p_wait => false)).shard IS NOT NULL THEN
            v_hourly := v_hourly || waybill.rollup_hourly(v_until, p_shard => v_shard);
        END IF;
    END LOOP;
    RETURN jsonb_build_object('hourly', v_hourly, 'daily', v_daily);
END
$$;
