-- waybill.project_exists: is this project known to Waybill?
-- A project exists once it has sent an event, been given an API key, a
-- subscription, a credit or a billing record. Reads only primary keys.
-- Input: the project id. Output: boolean. No side effects.
CREATE OR REPLACE FUNCTION waybill.project_exists(p_project_id uuid) RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM waybill.event_keys WHERE project_id = p_project_id)
        OR EXISTS (SELECT 1 FROM waybill.project_api_keys WHERE project_id = p_project_id)
        OR EXISTS (SELECT 1 FROM waybill.subscriptions WHERE project_id = p_project_id)
        OR EXISTS (SELECT 1 FROM waybill.billing_records WHERE project_id = p_project_id)
        OR EXISTS (SELECT 1 FROM waybill.credits WHERE project_id = p_project_id)
$$;
