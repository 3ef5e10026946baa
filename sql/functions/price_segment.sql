-- waybill.price_segment: THE pricing function. Every amount Waybill shows (invoice
-- lines, usage/current, the estimate) comes from here, line by line.
--
-- Inputs: the plan (NULL = pay as you go: no base fee, nothing included, default
-- rates), the segment's length and its billing month's length in seconds (base
-- fee and included amounts are prorated by segment/month, to the second), and the
-- segment's usage in exact base units (GB-seconds, build seconds, egress GB, the
-- most custom domains attached at once).
-- Output: one row per line: 1 base fee (only on a plan), 2 compute GB-hours,
-- 3 build minutes, 4 storage GB-months, 5 bandwidth GB, 6 custom domains.
-- quantity/included/billable are shown in the line's unit, rounded to 6 places
-- for display; amount_cents is computed from the exact base units with a single
-- division and one rounding, half up, to whole cents:
--     amount = round(100 * max(0, q * M - I * f * S) * rate / (f * M))
-- with q the base quantity, I the monthly included amount in the unit, f the base
-- units per unit (3600 for GB-hours, 60 for minutes, M for GB-months, 1 for GB),
-- S the segment seconds and M the month seconds. Rates NULL on the plan come
-- from waybill.billing_settings (PRICE_*). Custom domains: included count is not
-- prorated; each domain over it costs the domain rate per month, prorated (the
-- default rate is 0: shown, not charged).
-- Side effects: none. Errors: none (an unknown plan id prices as pay as you go;
-- callers validate plan ids).
CREATE OR REPLACE FUNCTION waybill.price_segment(
    p_plan_id text, p_segment_seconds numeric, p_period_seconds numeric,
    p_compute_gb_seconds numeric, p_storage_gb_seconds numeric, p_build_seconds numeric,
    p_bandwidth_gb numeric, p_custom_domains integer
) RETURNS TABLE (
    line_no integer, kind waybill.billing_line_kind, metric text, description text,
    quantity numeric, included numeric, billable numeric, unit text, unit_price numeric,
    amount_cents bigint
)
LANGUAGE sql STABLE AS $$
    -- One SELECT without CTEs, so that the planner inlines it into the caller's
    -- query (a whole month of projects is priced by one join, not one call each).
    SELECT v.line_no, v.kind::waybill.billing_line_kind, v.metric,
           CASE WHEN v.line_no = 1 THEN pl.name || ' plan' ELSE v.label || ' (' || v.unit || ')' END,
           CASE WHEN v.line_no = 1 THEN round(p_segment_seconds / p_period_seconds, 6)
                WHEN v.line_no = 6 THEN v.q
                ELSE round(v.q / v.f, 6) END,
           CASE WHEN v.line_no = 1 THEN NULL
                WHEN v.line_no = 6 THEN v.inc
                ELSE round(v.inc * p_segment_seconds / p_period_seconds, 6) END,
           CASE WHEN v.line_no = 1 THEN NULL
                WHEN v.inc IS NULL THEN 0
                WHEN v.line_no = 6 THEN greatest(0, v.q - v.inc)
                ELSE round(greatest(0, v.q * p_period_seconds - v.inc * v.f * p_segment_seconds)
                           / (v.f * p_period_seconds), 6) END,
           v.unit,
           CASE WHEN v.line_no = 1 THEN round(pl.base_fee_cents::numeric / 100, 2) ELSE v.rate END,
           CASE WHEN v.line_no = 1
                    THEN round(pl.base_fee_cents * p_segment_seconds / p_period_seconds)
                WHEN v.inc IS NULL THEN 0
                WHEN v.line_no = 6
                    THEN round(100 * greatest(0, v.q - v.inc) * v.rate * p_segment_seconds
                               / p_period_seconds)
                ELSE round(100 * greatest(0, v.q * p_period_seconds - v.inc * v.f * p_segment_seconds)
                           * v.rate / (v.f * p_period_seconds))
           END::bigint
      FROM waybill.billing_settings s
      LEFT JOIN waybill.pricing_plans pl ON pl.plan_id = p_plan_id
     CROSS JOIN LATERAL (VALUES
        (1, 'base_fee', NULL, NULL, 'month', NULL::numeric, NULL::numeric, NULL::numeric,
         NULL::numeric),
        (2, 'usage', 'compute_gb_hours', 'Compute', 'GB-hours', coalesce(p_compute_gb_seconds, 0),
         3600::numeric, CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_compute_gb_hours END,
         coalesce(pl.rate_compute_gb_hour, s.price_compute_gb_hour)),
        (3, 'usage', 'build_minutes', 'Build', 'minutes', coalesce(p_build_seconds, 0),
         60::numeric, CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_build_minutes END,
         coalesce(pl.rate_build_minute, s.price_build_minute)),
        (4, 'usage', 'storage_gb_months', 'Storage', 'GB-months', coalesce(p_storage_gb_seconds, 0),
         p_period_seconds, CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_storage_gb_months END,
         coalesce(pl.rate_storage_gb_month, s.price_storage_gb_month)),
        (5, 'usage', 'bandwidth_gb', 'Bandwidth', 'GB', coalesce(p_bandwidth_gb, 0),
         1::numeric, CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_bandwidth_gb END,
         coalesce(pl.rate_bandwidth_gb, s.price_bandwidth_gb)),
        (6, 'usage', 'custom_domains', 'Custom domains', 'domain-months',
         coalesce(p_custom_domains, 0)::numeric, 1::numeric,
         CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_custom_domains END::numeric,
         coalesce(pl.rate_custom_domain, s.price_custom_domain))
     ) AS v(line_no, kind, metric, label, unit, q, f, inc, rate)
     WHERE v.line_no > 1 OR pl.plan_id IS NOT NULL
$$;
