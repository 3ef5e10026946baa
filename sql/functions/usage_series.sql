-- waybill.usage_series: one project's usage per hour, day or month, for charts.
--
-- Inputs: project id; [p_from, p_to) aligned to p_granularity ('hour', 'day',
-- 'month', UTC). Output: one row per period in the window, zeros included, in
-- display units (GB-hours, minutes: exact numeric division, unrounded) plus
-- custom_domains (max). Computed from hourly_usage, so as fresh as usage_as_of().
-- No side effects. Errors: 22023 for an unknown granularity or unaligned bounds.
CREATE OR REPLACE FUNCTION waybill.usage_series(p_project_id uuid, p_from timestamptz,
                                                p_to timestamptz, p_granularity text)
RETURNS TABLE (period_start timestamptz, period_end timestamptz, compute_gb_hours numeric,
               storage_gb_hours numeric, build_minutes numeric, bandwidth_gb numeric,
               custom_domains integer)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_step interval;
BEGIN
    v_step := CASE p_granularity WHEN 'hour' THEN interval '1 hour' WHEN 'day' THEN interval '1 day'
                                 WHEN 'month' THEN interval '1 month' END;
    IF v_step IS NULL THEN
        RAISE EXCEPTION 'usage_series: granularity must be hour, day or month, not %',
            p_granularity USING ERRCODE = '22023';
    END IF;
    IF p_from <> date_trunc(p_granularity, p_from, 'UTC')
       OR p_to <> date_trunc(p_granularity, p_to, 'UTC') OR p_to < p_from THEN
        RAISE EXCEPTION 'usage_series: [%, %) must be % boundaries in order', p_from, p_to,
            p_granularity USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    WITH periods AS (
        -- months and days step in UTC, whatever the session's time zone
        SELECT (g AT TIME ZONE 'UTC') AS s, ((g + v_step) AT TIME ZONE 'UTC') AS e
          FROM generate_series(p_from AT TIME ZONE 'UTC', (p_to AT TIME ZONE 'UTC') - v_step,
                               v_step) g
    ), sums AS (
        SELECT date_trunc(p_granularity, h.hour, 'UTC') AS s,
               sum(h.compute_gb_seconds) AS c, sum(h.storage_gb_seconds) AS st,
               sum(h.build_seconds) AS b, sum(h.bandwidth_gb) AS bw, max(h.custom_domains) AS d
          FROM waybill.hourly_usage h
         WHERE h.project_id = p_project_id AND h.hour >= p_from AND h.hour < p_to
         GROUP BY 1
    )
    SELECT p.s, p.e, coalesce(x.c, 0) / 3600, coalesce(x.st, 0) / 3600, coalesce(x.b, 0) / 60,
           coalesce(x.bw, 0), coalesce(x.d, 0)
      FROM periods p LEFT JOIN sums x ON x.s = p.s
     ORDER BY p.s;
END
$$;
