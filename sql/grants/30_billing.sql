-- Grants for pricing and billing. Repeatable: re-applied on every migrate.
-- The service role reads plans, subscriptions, records and credits; writes the
-- default rates and grace period (from its environment, at start-up), grants
-- credits, and changes subscriptions only through waybill.set_subscription
-- (SECURITY DEFINER: it checks finalized periods). Billing runs (bill_period,
-- finalize_period) are for the owner: CLI and pg_cron.
GRANT SELECT ON waybill.pricing_plans, waybill.billing_settings, waybill.subscriptions,
    waybill.billing_records, waybill.billing_record_lines, waybill.credits,
    waybill.credit_applications TO waybill_app;
GRANT UPDATE ON waybill.billing_settings TO waybill_app;
GRANT INSERT ON waybill.credits TO waybill_app;
REVOKE ALL ON FUNCTION waybill.set_subscription(uuid, text, timestamptz, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION waybill.set_subscription(uuid, text, timestamptz, text, text) TO waybill_app;
GRANT EXECUTE ON FUNCTION
    waybill.price_segment(text, numeric, numeric, numeric, numeric, numeric, numeric, integer),
    waybill.price_estimate(text, date, numeric, numeric, numeric, numeric, numeric, numeric, numeric, integer),
    waybill.billing_segment_usage(date, timestamptz, uuid[]),
    waybill.billing_usage_as_of(),
    waybill.usage_current(uuid, timestamptz)
    TO waybill_app;
REVOKE ALL ON FUNCTION waybill.bill_period(date, timestamptz), waybill.finalize_period(date, timestamptz),
    waybill.run_scheduled_billing() FROM PUBLIC;

-- Analysts read the billing views and nothing else.
GRANT USAGE ON SCHEMA analytics TO waybill_analyst;
GRANT SELECT ON analytics.invoices, analytics.invoice_lines, analytics.monthly_revenue
    TO waybill_analyst;
