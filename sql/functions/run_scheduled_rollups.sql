-- waybill.run_scheduled_rollups: the entry point pg_cron calls; the only rollup
-- code that reads the clock.
--
-- Input: p_job, 'hourly' (hours closed by now) or 'daily' (the same, then the
-- days closed by now). Output: jsonb {hourly, daily} summaries.
-- Side effects: those of rollup_hourly and rollup_daily. Errors: 22023 for an
-- unknown p_job.
CREATE OR REPLACE FUNCTION waybill.run_scheduled_rollups(p_job text DEFAULT 'hourly')
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_now    timestamptz := clock_timestamp();
    v_hourly jsonb;
    v_daily  jsonb;
BEGIN
    IF p_job NOT IN ('hourly', 'daily') THEN
        RAISE EXCEPTION 'run_scheduled_rollups: unknown job %', p_job USING ERRCODE = '22023';
    END IF;
    v_hourly := waybill.rollup_hourly(date_trunc('hour', v_now, 'UTC'));
    IF p_job = 'daily' THEN
        v_daily := waybill.rollup_daily((v_now AT TIME ZONE 'UTC')::date);
    END IF;
    RETURN jsonb_build_object('hourly', v_hourly, 'daily', v_daily);
END
$$;
