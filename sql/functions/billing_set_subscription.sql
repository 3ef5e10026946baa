-- waybill.set_subscription: put a project on a plan (or cancel) from an instant on.
--
-- Inputs: project, plan id (NULL cancels: pay as you go from then on), the
-- instant it takes effect, the source ('api', 'stripe', 'cli') and an optional
-- Stripe subscription id.
-- Output: the new subscription row (subscription_id, plan_id, effective_at).
-- Side effects: live changes at or after p_effective_at are marked superseded
-- (kept as history), then the new change is inserted. Changes for one project
-- are serialized by an advisory lock.
-- Errors: WB422 for an unknown plan (DETAIL lists the known ones); WB409 when
-- p_effective_at falls in a month that has been finalized (for any project: the
-- month's billing has closed), since a finalized record never changes.
CREATE OR REPLACE FUNCTION waybill.set_subscription(
    p_project_id uuid, p_plan_id text, p_effective_at timestamptz,
    p_source text DEFAULT 'api', p_stripe_subscription_id text DEFAULT NULL
) RETURNS TABLE (subscription_id uuid, plan_id text, effective_at timestamptz)
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_month date := date_trunc('month', p_effective_at AT TIME ZONE 'UTC')::date;
BEGIN
    PERFORM waybill.require_known_plan(p_plan_id);
    PERFORM pg_advisory_xact_lock(hashtext('waybill.subscription'), hashtext(p_project_id::text));
    IF EXISTS (SELECT 1 FROM waybill.billing_records r
                WHERE r.period_start >= v_month AND r.status <> 'draft') THEN
        RAISE EXCEPTION '% falls in a finalized billing period', p_effective_at USING ERRCODE = 'WB409',
            DETAIL = json_build_object('period', to_char(v_month, 'YYYY-MM'))::text;
    END IF;
    UPDATE waybill.subscriptions s SET superseded_at = now()
     WHERE s.project_id = p_project_id AND s.superseded_at IS NULL
       AND s.effective_at >= p_effective_at;
    RETURN QUERY
    INSERT INTO waybill.subscriptions AS s
           (project_id, plan_id, effective_at, source, stripe_subscription_id)
    VALUES (p_project_id, p_plan_id, p_effective_at, p_source, p_stripe_subscription_id)
    RETURNING s.subscription_id, s.plan_id, s.effective_at;
END
$$;
