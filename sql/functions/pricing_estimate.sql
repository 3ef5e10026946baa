-- waybill.price_estimate: price a usage profile for one month, line by line,
-- with the same function as invoices (waybill.price_segment).
--
-- Inputs: plan (NULL = pay as you go), the month (its length converts storage to
-- GB-months and is the whole-month segment), the hours the shape runs in it,
-- the shape (replicas, cpu_millicores, memory_mb; GB-equivalent as metering
-- computes it, waybill.gb_equivalent), storage GB held for
-- those hours, total build minutes, egress GB and custom domains.
-- Output: the lines of waybill.price_segment for a whole month on the plan: an
-- invoice for the same usage in that month has exactly these lines.
-- Side effects: none.
-- Errors: WB422 for an unknown plan (DETAIL lists the known ones) or hours
-- outside 0 .. hours in the month.
CREATE OR REPLACE FUNCTION waybill.price_estimate(
    p_plan_id text, p_month date, p_hours numeric, p_replicas numeric, p_cpu_millicores numeric,
    p_memory_mb numeric, p_storage_gb numeric, p_build_minutes numeric, p_bandwidth_gb numeric,
    p_custom_domains integer
) RETURNS TABLE (
    line_no integer, kind waybill.billing_line_kind, metric text, description text,
    quantity numeric, included numeric, billable numeric, unit text, unit_price numeric,
    amount_cents bigint
)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_month   date := date_trunc('month', p_month)::date;
    v_seconds numeric := extract(epoch FROM (v_month + interval '1 month') - v_month);
BEGIN
    PERFORM waybill.require_known_plan(p_plan_id);
    IF p_hours < 0 OR p_hours * 3600 > v_seconds THEN
        RAISE EXCEPTION 'hours must be between 0 and %, the hours in %', v_seconds / 3600,
            to_char(v_month, 'YYYY-MM') USING ERRCODE = 'WB422';
    END IF;
    RETURN QUERY SELECT * FROM waybill.price_segment(
        p_plan_id, v_seconds, v_seconds,
        waybill.gb_equivalent(p_replicas, p_cpu_millicores, p_memory_mb) * p_hours * 3600,
        p_storage_gb * p_hours * 3600,
        p_build_minutes * 60,
        p_bandwidth_gb,
        p_custom_domains);
END
$$;
