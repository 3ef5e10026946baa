-- depends: 0200_billing 0100_metering
-- Billing reads a month of daily_usage for every project at once (and finds the
-- days recomputed after a month was finalized): an index on day serves both.
CREATE INDEX daily_usage_day_idx ON waybill.daily_usage (day);
