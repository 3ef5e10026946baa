-- waybill.require_known_plan: refuse a plan id that pricing_plans does not hold.
-- Input: a plan id (NULL passes: no plan, pay as you go). Output: none.
-- Errors: WB422 'unknown plan', DETAIL {"known_plans": [...]} in sort order.
-- Shared by set_subscription and price_estimate, so both name the same plans.
CREATE OR REPLACE FUNCTION waybill.require_known_plan(p_plan_id text) RETURNS void
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_plan_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM waybill.pricing_plans pl WHERE pl.plan_id = p_plan_id) THEN
        RAISE EXCEPTION 'unknown plan %', p_plan_id USING ERRCODE = 'WB422',
            DETAIL = json_build_object('known_plans',
                (SELECT json_agg(pl.plan_id ORDER BY pl.sort_order) FROM waybill.pricing_plans pl))::text;
    END IF;
END
$$;
