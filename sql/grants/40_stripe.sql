-- Grants for Stripe sync and webhooks. Repeatable: re-applied on every migrate.
-- What: the service role (API process and `waybill stripe-sync`, both as
-- waybill_app) reads records and lines, fills in Stripe ids, moves a finalized
-- record's status (the guard trigger on billing_records allows only forward moves
-- and refuses any change of amounts or lines), keeps customers, the outbox and
-- the webhook log. Inputs/outputs: none. Side effects: privileges only.
-- Errors: none.
GRANT SELECT, INSERT ON waybill.stripe_customers TO waybill_app;
GRANT SELECT, INSERT, UPDATE ON waybill.stripe_outbox, waybill.stripe_webhook_events TO waybill_app;
GRANT UPDATE (status, stripe_invoice_id, updated_at) ON waybill.billing_records TO waybill_app;
REVOKE ALL ON FUNCTION waybill.stripe_enqueue_finalized_record() FROM PUBLIC;
