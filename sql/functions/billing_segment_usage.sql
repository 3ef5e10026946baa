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
-- Projects with no change inside the month (nearly all) are summed with one
-- GROUP BY; only those with a change join hours to segments.
CREATE OR REPLACE FUNCTION waybill.billing_segment_usage(
    p_period_start date, p_until timestamptz, p_project_ids uuid[]
) RETURNS TABLE (
    project_id uuid, segment_from timestamptz, segment_to timestamptz, plan_id text,
    compute_gb_seconds numeric, storage_gb_seconds numeric, build_seconds numeric,
    bandwidth_gb numeric, custom_domains integer
)
LANGUAGE sql STABLE AS $$
    WITH bounds AS (
        SELECT p_period_start::timestamp AT TIME ZONE 'UTC' AS v_from,
               (p_period_start + interval '1 month')::timestamp AT TIME ZONE 'UTC' AS v_to
    ), live AS (
        SELECT s.project_id, s.effective_at, s.plan_id
          FROM waybill.subscriptions s, bounds b
         WHERE s.superseded_at IS NULL AND s.effective_at < b.v_to
           AND (p_project_ids IS NULL OR s.project_id = ANY (p_project_ids))
    ), opening AS (
        SELECT DISTINCT ON (l.project_id) l.project_id, l.plan_id
          FROM live l, bounds b
         WHERE l.effective_at <= b.v_from
         ORDER BY l.project_id, l.effective_at DESC
    ), changes AS (
        SELECT l.project_id, l.effective_at, l.plan_id
          FROM live l, bounds b WHERE l.effective_at > b.v_from
    ), multi AS (
        SELECT DISTINCT c.project_id FROM changes c
    ), single_usage AS (
        SELECT u.project_id,
               sum(u.compute_gb_seconds) AS compute_gb_seconds,
               sum(u.storage_gb_seconds) AS storage_gb_seconds,
               sum(u.build_seconds) AS build_seconds,
               sum(u.bandwidth_gb) AS bandwidth_gb,
               max(u.custom_domains) AS custom_domains
          FROM waybill.hourly_usage u, bounds b
         WHERE u.hour >= b.v_from AND u.hour < least(b.v_to, p_until)
           AND (p_project_ids IS NULL OR u.project_id = ANY (p_project_ids))
           AND NOT EXISTS (SELECT 1 FROM multi m WHERE m.project_id = u.project_id)
         GROUP BY u.project_id
    ), single_segments AS (
        SELECT coalesce(su.project_id, o.project_id) AS project_id, b.v_from, b.v_to,
               o.plan_id, coalesce(su.compute_gb_seconds, 0), coalesce(su.storage_gb_seconds, 0),
               coalesce(su.build_seconds, 0), coalesce(su.bandwidth_gb, 0),
               coalesce(su.custom_domains, 0)
          FROM single_usage su
          FULL JOIN (SELECT o1.* FROM opening o1
                      WHERE NOT EXISTS (SELECT 1 FROM multi m WHERE m.project_id = o1.project_id)) o
            ON o.project_id = su.project_id
         CROSS JOIN bounds b
    ), starts AS (
        SELECT m.project_id, b.v_from AS effective_at, o.plan_id
          FROM multi m CROSS JOIN bounds b LEFT JOIN opening o ON o.project_id = m.project_id
        UNION ALL
        SELECT c.project_id, c.effective_at, c.plan_id FROM changes c
    ), multi_segments AS (
        SELECT st.project_id, st.effective_at AS seg_from,
               lead(st.effective_at, 1, b.v_to)
                   OVER (PARTITION BY st.project_id ORDER BY st.effective_at) AS seg_to,
               st.plan_id
          FROM starts st CROSS JOIN bounds b
    ), multi_usage AS (
        SELECT s.project_id, s.seg_from, s.seg_to, s.plan_id,
               coalesce(sum(u.compute_gb_seconds), 0), coalesce(sum(u.storage_gb_seconds), 0),
               coalesce(sum(u.build_seconds), 0), coalesce(sum(u.bandwidth_gb), 0),
               coalesce(max(u.custom_domains), 0)
          FROM multi_segments s
          LEFT JOIN waybill.hourly_usage u
            ON u.project_id = s.project_id AND u.hour >= s.seg_from AND u.hour < s.seg_to
           AND u.hour < p_until
         GROUP BY s.project_id, s.seg_from, s.seg_to, s.plan_id
    )
    SELECT * FROM (
        SELECT * FROM single_segments
        UNION ALL
        SELECT * FROM multi_usage
    ) r(project_id, segment_from, segment_to, plan_id, compute_gb_seconds, storage_gb_seconds,
        build_seconds, bandwidth_gb, custom_domains)
     WHERE r.plan_id IS NOT NULL OR r.compute_gb_seconds > 0 OR r.storage_gb_seconds > 0
        OR r.build_seconds > 0 OR r.bandwidth_gb > 0 OR r.custom_domains > 0
$$;
