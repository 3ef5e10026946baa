-- waybill.usage_current: the current month of one project, priced so far and
-- projected to the month's end (GET /api/v1/projects/{id}/usage/current).
--
-- Inputs: project, p_now (the request's instant).
-- Output: one jsonb document: plan in force at p_now, period, as_of (usage is
-- complete up to this instant: waybill.billing_usage_as_of, at most p_now),
-- lines (waybill.price_segment per subscription segment, usage so far: base fee
-- for the month's segments, per metric quantity, included, billable, unit price,
-- amount), total_so_far_cents (the record as it would be if no more usage came),
-- projected_total_cents (each segment's usage so far scaled linearly to its full
-- length; custom domains are not scaled), credits_available_cents (unexpired,
-- unapplied credit). Numbers other than cents are strings (exact decimals).
-- Side effects: none. Errors: none.
CREATE OR REPLACE FUNCTION waybill.usage_current(p_project_id uuid, p_now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_period  date := date_trunc('month', p_now AT TIME ZONE 'UTC')::date;
    v_from    timestamptz := date_trunc('month', p_now, 'UTC');
    v_to      timestamptz := (date_trunc('month', p_now AT TIME ZONE 'UTC') + interval '1 month') AT TIME ZONE 'UTC';
    v_as_of   timestamptz;
    v_seconds numeric;
    v_plan    text;
    v_doc     jsonb;
BEGIN
    v_seconds := extract(epoch FROM v_to - v_from);
    v_as_of := greatest(v_from, least(p_now, coalesce(waybill.billing_usage_as_of(), v_from)));
    SELECT s.plan_id INTO v_plan FROM waybill.subscriptions s
     WHERE s.project_id = p_project_id AND s.superseded_at IS NULL AND s.effective_at <= p_now
     ORDER BY s.effective_at DESC LIMIT 1;

    WITH segs AS (
        SELECT u.*,
               extract(epoch FROM u.segment_to - u.segment_from) AS seg_seconds,
               extract(epoch FROM least(v_as_of, u.segment_to) - u.segment_from) AS elapsed
          FROM waybill.billing_segment_usage(v_period, v_as_of, ARRAY[p_project_id]) u
    ), so_far AS (
        SELECT s.segment_from, s.segment_to, s.plan_id, l.*
          FROM segs s CROSS JOIN LATERAL waybill.price_segment(
                   s.plan_id, s.seg_seconds, v_seconds, s.compute_gb_seconds,
                   s.storage_gb_seconds, s.build_seconds, s.bandwidth_gb, s.custom_domains) l
    ), projected AS (
        SELECT l.amount_cents
          FROM (SELECT s.*, CASE WHEN s.elapsed > 0 THEN s.seg_seconds / s.elapsed ELSE 0 END AS k
                  FROM segs s) s
         CROSS JOIN LATERAL waybill.price_segment(
                   s.plan_id, s.seg_seconds, v_seconds, s.compute_gb_seconds * s.k,
                   s.storage_gb_seconds * s.k, s.build_seconds * s.k, s.bandwidth_gb * s.k,
                   s.custom_domains) l
    )
    SELECT jsonb_build_object(
        'project_id', p_project_id,
        'plan', v_plan,
        'currency', (SELECT currency FROM waybill.billing_settings),
        'period', jsonb_build_object('start', v_from, 'end', v_to, 'month', to_char(v_period, 'YYYY-MM')),
        'as_of', v_as_of,
        'lines', coalesce((SELECT jsonb_agg(jsonb_build_object(
                    'kind', f.kind, 'metric', f.metric, 'description', f.description,
                    'plan', f.plan_id, 'segment_from', f.segment_from, 'segment_to', f.segment_to,
                    'quantity', f.quantity::text, 'included', f.included::text,
                    'billable', f.billable::text, 'unit', f.unit, 'unit_price', f.unit_price::text,
                    'amount_cents', f.amount_cents) ORDER BY f.segment_from, f.line_no)
                   FROM so_far f), '[]'::jsonb),
        'base_fee_cents', coalesce((SELECT sum(f.amount_cents) FROM so_far f WHERE f.kind = 'base_fee'), 0),
        'total_so_far_cents', coalesce((SELECT sum(f.amount_cents) FROM so_far f), 0),
        'projected_total_cents', coalesce((SELECT sum(p.amount_cents) FROM projected p), 0),
        'credits_available_cents', coalesce((
            SELECT sum(c.amount_cents - coalesce((SELECT sum(a.amount_cents) FROM waybill.credit_applications a
                                                   WHERE a.project_id = c.project_id
                                                     AND a.credit_id = c.credit_id), 0))
              FROM waybill.credits c
             WHERE c.project_id = p_project_id AND (c.expires_at IS NULL OR c.expires_at > p_now)), 0)
    ) INTO v_doc;
    RETURN v_doc;
END
$$;
