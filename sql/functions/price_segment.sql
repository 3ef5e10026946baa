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
    WITH p AS (
        SELECT pl.plan_id, pl.name, pl.base_fee_cents,
               CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_compute_gb_hours END AS inc_compute,
               CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_build_minutes END AS inc_build,
               CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_storage_gb_months END AS inc_storage,
               CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_bandwidth_gb END AS inc_bandwidth,
               CASE WHEN pl.plan_id IS NULL THEN 0 ELSE pl.included_custom_domains END AS inc_domains,
               coalesce(pl.rate_compute_gb_hour, s.price_compute_gb_hour) AS rate_compute,
               coalesce(pl.rate_build_minute, s.price_build_minute) AS rate_build,
               coalesce(pl.rate_storage_gb_month, s.price_storage_gb_month) AS rate_storage,
               coalesce(pl.rate_bandwidth_gb, s.price_bandwidth_gb) AS rate_bandwidth,
               coalesce(pl.rate_custom_domain, s.price_custom_domain) AS rate_domain
          FROM waybill.billing_settings s
          LEFT JOIN waybill.pricing_plans pl ON pl.plan_id = p_plan_id
    ), m AS (
        SELECT v.*
          FROM p CROSS JOIN LATERAL (VALUES
            (2, 'compute_gb_hours', 'Compute', 'GB-hours', coalesce(p_compute_gb_seconds, 0),
             3600::numeric, p.inc_compute, p.rate_compute),
            (3, 'build_minutes', 'Build', 'minutes', coalesce(p_build_seconds, 0),
             60::numeric, p.inc_build, p.rate_build),
            (4, 'storage_gb_months', 'Storage', 'GB-months', coalesce(p_storage_gb_seconds, 0),
             p_period_seconds, p.inc_storage, p.rate_storage),
            (5, 'bandwidth_gb', 'Bandwidth', 'GB', coalesce(p_bandwidth_gb, 0),
             1::numeric, p.inc_bandwidth, p.rate_bandwidth)
          ) AS v(line_no, metric, label, unit, q, f, inc, rate)
    ), b AS (  -- billable, in base units times month seconds (exact: no division yet)
        SELECT m.*,
               CASE WHEN m.inc IS NULL THEN 0
                    ELSE greatest(0, m.q * p_period_seconds - m.inc * m.f * p_segment_seconds)
               END AS billable_scaled
          FROM m
    )
    SELECT 1, 'base_fee'::waybill.billing_line_kind, NULL::text, p.name || ' plan',
           round(p_segment_seconds / p_period_seconds, 6), NULL::numeric, NULL::numeric,
           'month', round(p.base_fee_cents::numeric / 100, 2),
           round(p.base_fee_cents * p_segment_seconds / p_period_seconds)::bigint
      FROM p WHERE p.plan_id IS NOT NULL
    UNION ALL
    SELECT b.line_no, 'usage', b.metric, b.label || ' (' || b.unit || ')',
           round(b.q / b.f, 6),
           round(b.inc * p_segment_seconds / p_period_seconds, 6),
           round(b.billable_scaled / (b.f * p_period_seconds), 6),
           b.unit, b.rate,
           round(100 * b.billable_scaled * b.rate / (b.f * p_period_seconds))::bigint
      FROM b
    UNION ALL
    SELECT 6, 'usage', 'custom_domains', 'Custom domains',
           coalesce(p_custom_domains, 0), p.inc_domains,
           CASE WHEN p.inc_domains IS NULL THEN 0
                ELSE greatest(0, coalesce(p_custom_domains, 0) - p.inc_domains) END,
           'domain-months', p.rate_domain,
           CASE WHEN p.inc_domains IS NULL THEN 0
                ELSE round(100 * greatest(0, coalesce(p_custom_domains, 0) - p.inc_domains)
                           * p.rate_domain * p_segment_seconds / p_period_seconds)::bigint END
      FROM p
$$;
