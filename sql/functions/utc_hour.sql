-- waybill.utc_hour: the start of the UTC hour holding an instant.
--
-- Input: p_at. Output: timestamptz, a whole UTC hour. No side effects.
-- date_bin is plain arithmetic on the instant; date_trunc with a time zone name
-- looks the zone up on every call, which a rollup over millions of events feels.
-- An immutable one-line SQL function, so the planner inlines it.
CREATE OR REPLACE FUNCTION waybill.utc_hour(p_at timestamptz) RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT date_bin('1 hour', p_at, timestamptz '1970-01-01 00:00+00')
$$;
