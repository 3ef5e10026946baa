-- depends: 0100_metering 0300_stripe 0400_partition_events
-- Every unique key of a per-project table includes project_id, so each table can
-- be distributed by project_id on Citus (docs/scaling.md). Stripe's own ids are
-- unique across projects anyway; pairing them with project_id keeps that
-- uniqueness while making the key distributable. project_api_keys keeps its
-- unique key_hash: it is a reference table (looked up before the project is known).
ALTER TABLE waybill.metering_anomalies DROP CONSTRAINT metering_anomalies_pkey,
    ADD CONSTRAINT metering_anomalies_pkey PRIMARY KEY (project_id, seq, anomaly);

ALTER TABLE waybill.stripe_customers DROP CONSTRAINT stripe_customers_customer_key,
    ADD CONSTRAINT stripe_customers_customer_key UNIQUE (customer_id, project_id);

DROP INDEX waybill.stripe_outbox_invoice_key;
CREATE UNIQUE INDEX stripe_outbox_invoice_key
    ON waybill.stripe_outbox (stripe_invoice_id, project_id) WHERE stripe_invoice_id IS NOT NULL;
