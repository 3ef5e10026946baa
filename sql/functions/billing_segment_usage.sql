-- waybill.billing_segment_usage: the one place billing reads usage.
--
-- Splits a billing month into subscription segments per project (the plan in
-- force from each live change in waybill.subscriptions; before a project's first
-- subscription, or after a cancellation, the plan is NULL: pay as you go) and
-- sums waybill.hourly_usage into them. An hour belongs to the segment in force
-- at the hour's start (usage is hourly); base fee and included amounts are
-- prorated to the second by the pricing function.
-- Inputs: p_period_start (first day of a UTC month), p_until (usage of hours
-- starting before this instant counts; the month end for invoices, the usage
-- watermark for usage/current), p_project_ids (NULL = every project).
-- Output: one row per (project, segment) that has a plan or any usage, with the
-- segment bounds, plan and exact base-unit quantities (custom_domains = most
-- attached at once, a max, never a sum). Side effects: none. Errors: none.
-- Reads daily_usage for whole days it holds exactly (metering keeps a day in
-- rollup_dirty_days from the moment one of its hours changes until daily_usage
-- is recomputed), and hourly_usage for those dirty days and for a partial last
-- day (p_until inside a day). Projects with a change inside the month read
-- hourly_usage by segment, through the (project_id, hour) key. SECURITY DEFINER:
-- the service role reads usage through it without seeing metering's bookkeeping.
-- EXECUTE plans the query for the actual arguments on every call (all projects
-- or a few), never with a generic plan.
CREATE OR REPLACE FUNCTION waybill.billing_segment_usage(
    p_period_start date, p_until timestamptz, p_project_ids uuid[]
) RETURNS TABLE (
    project_id uuid, segment_from timestamptz, segment_to timestamptz, plan_id text,
    compute_gb_seconds numeric, storage_gb_seconds numeric, build_seconds numeric,
    bandwidth_gb numeric, custom_domains integer
)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off AS $$
DECLARE
    v_from  timestamptz := p_period_start::timestamp AT TIME ZONE 'UTC';
    v_to    timestamptz := (p_period_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
    v_until timestamptz := least((p_period_start + interval '1 month')::timestamp AT TIME ZONE 'UTC',
                                 p_until);
BEGIN
    RETURN QUERY EXECUTE $query$
    WITH live AS (
        SELECT s.project_id, s.effective_at, s.plan_id
          FROM waybill.subscriptions s
         WHERE s.superseded_at IS NULL AND s.effective_at < $2
           AND ($4::uuid[] IS NULL OR s.project_id = ANY ($4::uuid[]))
    ), opening AS (
        SELECT DISTINCT ON (l.project_id) l.project_id, l.plan_id
          FROM live l WHERE l.effective_at <= $1
         ORDER BY l.project_id, l.effective_at DESC
    ), changes AS (
        SELECT l.project_id, l.effective_at, l.plan_id FROM live l WHERE l.effective_at > $1
    ), multi AS (
        SELECT DISTINCT c.project_id FROM changes c
    ), parts AS (  -- plain table references only (no CTE), so the scan may run in parallel
        SELECT u.project_id, u.compute_gb_seconds, u.storage_gb_seconds, u.build_seconds,
               u.bandwidth_gb, u.custom_domains
          FROM waybill.daily_usage u
         WHERE u.day >= $5 AND ((u.day + 1)::timestamp AT TIME ZONE 'UTC') <= $3
           AND ($4::uuid[] IS NULL OR u.project_id = ANY ($4::uuid[]))
           AND NOT EXISTS (SELECT 1 FROM waybill.rollup_dirty_days dd
                            WHERE dd.project_id = u.project_id AND dd.day = u.day)
        UNION ALL  -- days daily_usage does not (yet) hold exactly: their hours
        SELECT h.project_id, h.compute_gb_seconds, h.storage_gb_seconds, h.build_seconds,
               h.bandwidth_gb, h.custom_domains
          FROM waybill.rollup_dirty_days d
          JOIN waybill.hourly_usage h
            ON h.project_id = d.project_id
           AND h.hour >= (d.day::timestamp AT TIME ZONE 'UTC')
           AND h.hour < least($3, (d.day + 1)::timestamp AT TIME ZONE 'UTC')
         WHERE d.day >= $5 AND (d.day::timestamp AT TIME ZONE 'UTC') < $3
           AND ($4::uuid[] IS NULL OR d.project_id = ANY ($4::uuid[]))
        UNION ALL  -- the day $3 falls in, when it is not a day boundary
        SELECT h.project_id, h.compute_gb_seconds, h.storage_gb_seconds, h.build_seconds,
               h.bandwidth_gb, h.custom_domains
          FROM waybill.hourly_usage h
         WHERE h.hour >= greatest($1, date_trunc('day', $3, 'UTC')) AND h.hour < $3
           AND ($4::uuid[] IS NULL OR h.project_id = ANY ($4::uuid[]))
           AND NOT EXISTS (SELECT 1 FROM waybill.rollup_dirty_days dd
                            WHERE dd.project_id = h.project_id
                              AND dd.day = (date_trunc('day', $3, 'UTC') AT TIME ZONE 'UTC')::date)
    ), totals AS (
        SELECT t.project_id,
               sum(t.compute_gb_seconds) AS compute_gb_seconds,
               sum(t.storage_gb_seconds) AS storage_gb_seconds,
               sum(t.build_seconds) AS build_seconds,
               sum(t.bandwidth_gb) AS bandwidth_gb,
               max(t.custom_domains) AS custom_domains
          FROM parts t
         GROUP BY t.project_id
    ), single AS (
        SELECT coalesce(t.project_id, o.project_id), $1, $2, o.plan_id,
               coalesce(t.compute_gb_seconds, 0), coalesce(t.storage_gb_seconds, 0),
               coalesce(t.build_seconds, 0), coalesce(t.bandwidth_gb, 0),
               coalesce(t.custom_domains, 0)
          FROM totals t
          FULL JOIN opening o ON o.project_id = t.project_id
         WHERE NOT EXISTS (SELECT 1 FROM multi m
                            WHERE m.project_id = coalesce(t.project_id, o.project_id))
    ), starts AS (
        SELECT m.project_id, $1 AS effective_at, o.plan_id
          FROM multi m LEFT JOIN opening o ON o.project_id = m.project_id
        UNION ALL
        SELECT c.project_id, c.effective_at, c.plan_id FROM changes c
    ), segments AS (
        SELECT x.*,
               -- whole UTC days inside the segment (and before $3): read from daily_usage
               date_trunc('day', x.seg_from + interval '1 day' - interval '1 microsecond', 'UTC')
                   AS full_from
          FROM (SELECT st.project_id, st.effective_at AS seg_from,
                       lead(st.effective_at, 1, $2) OVER (PARTITION BY st.project_id
                                                         ORDER BY st.effective_at) AS seg_to,
                       st.plan_id
                  FROM starts st) x
    ), bounded AS (
        SELECT s.*, least(s.seg_to, $3) AS seg_end,
               greatest(s.full_from, date_trunc('day', least(s.seg_to, $3), 'UTC')) AS full_to
          FROM segments s
    ), multi_usage AS (  -- per segment, through the (project_id, day|hour) primary keys
        SELECT s.project_id, s.seg_from, s.seg_to, s.plan_id, a.*
          FROM bounded s
         CROSS JOIN LATERAL (
               SELECT coalesce(sum(p.compute_gb_seconds), 0), coalesce(sum(p.storage_gb_seconds), 0),
                      coalesce(sum(p.build_seconds), 0), coalesce(sum(p.bandwidth_gb), 0),
                      coalesce(max(p.custom_domains), 0)
                 FROM (SELECT d.compute_gb_seconds, d.storage_gb_seconds, d.build_seconds,
                              d.bandwidth_gb, d.custom_domains
                         FROM waybill.daily_usage d
                        WHERE d.project_id = s.project_id
                          AND d.day >= (s.full_from AT TIME ZONE 'UTC')::date
                          AND d.day < (s.full_to AT TIME ZONE 'UTC')::date
                          AND NOT EXISTS (SELECT 1 FROM waybill.rollup_dirty_days hd
                                           WHERE hd.project_id = d.project_id AND hd.day = d.day)
                       UNION ALL  -- the partial days at the segment's edges
                       SELECT h.compute_gb_seconds, h.storage_gb_seconds, h.build_seconds,
                              h.bandwidth_gb, h.custom_domains
                         FROM waybill.hourly_usage h
                        WHERE h.project_id = s.project_id
                          AND ((h.hour >= s.seg_from AND h.hour < least(s.full_from, s.seg_end))
                               OR (h.hour >= greatest(s.full_to, s.seg_from) AND h.hour < s.seg_end))
                       UNION ALL  -- whole days daily_usage does not hold exactly
                       SELECT h.compute_gb_seconds, h.storage_gb_seconds, h.build_seconds,
                              h.bandwidth_gb, h.custom_domains
                         FROM waybill.rollup_dirty_days hd
                         JOIN waybill.hourly_usage h
                           ON h.project_id = hd.project_id
                          AND h.hour >= (hd.day::timestamp AT TIME ZONE 'UTC')
                          AND h.hour < ((hd.day + 1)::timestamp AT TIME ZONE 'UTC')
                        WHERE hd.project_id = s.project_id
                          AND hd.day >= (s.full_from AT TIME ZONE 'UTC')::date
                          AND hd.day < (s.full_to AT TIME ZONE 'UTC')::date) p) a
    )
    SELECT r.* FROM (
        SELECT * FROM single
        UNION ALL
        SELECT * FROM multi_usage
    ) r(project_id, segment_from, segment_to, plan_id, compute_gb_seconds, storage_gb_seconds,
        build_seconds, bandwidth_gb, custom_domains)
     WHERE r.plan_id IS NOT NULL OR r.compute_gb_seconds > 0 OR r.storage_gb_seconds > 0
        OR r.build_seconds > 0 OR r.bandwidth_gb > 0 OR r.custom_domains > 0
    $query$ USING v_from, v_to, v_until, p_project_ids, p_period_start;
END
$$;
