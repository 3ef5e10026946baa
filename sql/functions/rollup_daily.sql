-- waybill.rollup_daily: bring daily_usage up to date with hourly_usage.
--
-- Inputs: p_until, a UTC date: days before it may be computed. A project's day
-- is computed only once every one of its hours is closed (before its shard's
-- closed_until). p_shard: the shard of projects (waybill.rollup_shards); NULL:
-- every shard, one after the other, in this transaction.
-- Reads: rollup_dirty_days (the days whose hourly cells changed) and their hours.
-- Output: jsonb {days}: how many project-days were recomputed.
-- Side effects: upserts/deletes daily_usage rows (sums; custom_domains = max),
-- removes the days it handled from rollup_dirty_days. Serializes with
-- rollup_hourly on the shard's advisory lock. Errors: 22023 when p_shard is not
-- a shard.
CREATE OR REPLACE FUNCTION waybill.rollup_daily(p_until date, p_shard integer DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql AS $$
DECLARE
    v_closed  timestamptz;
    v_shards  integer;
    v_days    bigint;
    v_shard   integer;
BEGIN
    IF p_shard IS NULL THEN
        v_days := 0;
        FOR v_shard IN SELECT s.shard FROM waybill.rollup_shards s ORDER BY s.shard LOOP
            v_days := v_days + (waybill.rollup_daily(p_until, v_shard)->>'days')::bigint;
        END LOOP;
        RETURN jsonb_build_object('days', v_days);
    END IF;
    v_closed := (waybill.lock_rollup_shard(p_shard)).closed_until;
    v_shards := (SELECT count(*) FROM waybill.rollup_shards);
    IF v_closed IS NULL THEN
        RETURN jsonb_build_object('days', 0);
    END IF;

    DROP TABLE IF EXISTS pg_temp._m_days;
    CREATE TEMP TABLE _m_days ON COMMIT DROP AS
    WITH taken AS (
        DELETE FROM waybill.rollup_dirty_days d
         WHERE d.day < p_until
           AND ((d.day + 1)::timestamp AT TIME ZONE 'UTC') <= v_closed
           AND waybill.rollup_shard(d.project_id, v_shards) = p_shard
        RETURNING d.project_id, d.day
    )
    SELECT t.project_id, t.day, (t.day::timestamp AT TIME ZONE 'UTC') AS day_start FROM taken t;
    GET DIAGNOSTICS v_days = ROW_COUNT;

    WITH sums AS (
        SELECT d.project_id, d.day,
               sum(h.compute_gb_seconds) AS compute_gb_seconds,
               sum(h.storage_gb_seconds) AS storage_gb_seconds,
               sum(h.build_seconds) AS build_seconds, sum(h.bandwidth_gb) AS bandwidth_gb,
               max(h.custom_domains) AS custom_domains
          FROM _m_days d
          JOIN waybill.hourly_usage h
            ON h.project_id = d.project_id AND h.hour >= d.day_start
           AND h.hour < d.day_start + interval '1 day'
         GROUP BY d.project_id, d.day
    ), removed AS (
        DELETE FROM waybill.daily_usage u USING _m_days d
         WHERE u.project_id = d.project_id AND u.day = d.day
           AND NOT EXISTS (SELECT 1 FROM sums s WHERE s.project_id = d.project_id AND s.day = d.day)
    )
    INSERT INTO waybill.daily_usage AS u (project_id, day, compute_gb_seconds, storage_gb_seconds,
                                          build_seconds, bandwidth_gb, custom_domains, computed_at)
    SELECT s.project_id, s.day, s.compute_gb_seconds, s.storage_gb_seconds, s.build_seconds,
           s.bandwidth_gb, s.custom_domains, now()
      FROM sums s
    ON CONFLICT ON CONSTRAINT daily_usage_pkey DO UPDATE
       SET compute_gb_seconds = excluded.compute_gb_seconds,
           storage_gb_seconds = excluded.storage_gb_seconds,
           build_seconds = excluded.build_seconds, bandwidth_gb = excluded.bandwidth_gb,
           custom_domains = excluded.custom_domains, computed_at = excluded.computed_at
     WHERE (u.compute_gb_seconds, u.storage_gb_seconds, u.build_seconds, u.bandwidth_gb,
            u.custom_domains)
           IS DISTINCT FROM (excluded.compute_gb_seconds, excluded.storage_gb_seconds,
            excluded.build_seconds, excluded.bandwidth_gb, excluded.custom_domains);

    UPDATE waybill.rollup_shards s SET daily_run_at = now() WHERE s.shard = p_shard;
    RETURN jsonb_build_object('days', v_days);
END
$$;
