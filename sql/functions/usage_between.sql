-- waybill.usage_between: one project's usage over [p_from, p_to), for pricing.
--
-- Inputs: project id; p_from and p_to, hour boundaries (UTC). Hours not yet
-- closed (see usage_as_of) count as zero.
-- Output: one row, exact base units: compute_gb_seconds, storage_gb_seconds,
-- build_seconds, bandwidth_gb (sums) and custom_domains (the most attached at
-- once in any hour of the window). Divide by 3600 (GB-hours) or 60 (minutes)
-- at the edge, once. No side effects.
-- Errors: 22023 when a bound is not an hour boundary or p_to < p_from.
CREATE OR REPLACE FUNCTION waybill.usage_between(p_project_id uuid, p_from timestamptz,
                                                 p_to timestamptz)
RETURNS TABLE (compute_gb_seconds numeric, storage_gb_seconds numeric, build_seconds numeric,
               bandwidth_gb numeric, custom_domains integer)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_from <> date_trunc('hour', p_from, 'UTC') OR p_to <> date_trunc('hour', p_to, 'UTC')
       OR p_to < p_from THEN
        RAISE EXCEPTION 'usage_between: [%, %) must be hour boundaries in order', p_from, p_to
            USING ERRCODE = '22023';
    END IF;
    RETURN QUERY
    SELECT coalesce(sum(h.compute_gb_seconds), 0), coalesce(sum(h.storage_gb_seconds), 0),
           coalesce(sum(h.build_seconds), 0), coalesce(sum(h.bandwidth_gb), 0),
           coalesce(max(h.custom_domains), 0)
      FROM waybill.hourly_usage h
     WHERE h.project_id = p_project_id AND h.hour >= p_from AND h.hour < p_to;
END
$$;
