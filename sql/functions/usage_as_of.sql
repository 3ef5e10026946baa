-- waybill.usage_as_of: how fresh usage is. Every hour before this instant is in
-- hourly_usage; later hours are not yet computed. NULL before the first rollup.
-- Input: none. Output: timestamptz. No side effects.
CREATE OR REPLACE FUNCTION waybill.usage_as_of() RETURNS timestamptz
LANGUAGE sql STABLE AS $$
    SELECT closed_until FROM waybill.rollup_state
$$;
