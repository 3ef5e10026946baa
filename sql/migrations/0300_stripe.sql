-- depends: 0200_billing
-- Stripe: customers per project, the invoice outbox, and the webhook audit log.
--
-- What: the state Waybill keeps about Stripe. Amounts are never stored here
-- except Stripe's own total, kept to show a mismatch; billing_records and its
-- lines stay the only source of what is owed.
-- Inputs: none (schema only). Outputs: the tables below, the outbox trigger.
-- Side effects: finalizing a billing record (status draft -> open) inserts its
-- outbox row in the same transaction (trigger billing_records_stripe_outbox);
-- records already open when this migration runs are enqueued once here.
-- Errors: none of its own.

-- One Stripe customer per project, never two: the primary key is the project,
-- the customer id is unique, and the sync creates it under an advisory lock on
-- the project with an idempotency key derived from the project id.
CREATE TABLE waybill.stripe_customers (
    project_id  uuid        NOT NULL,
    customer_id text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT stripe_customers_pkey PRIMARY KEY (project_id),
    CONSTRAINT stripe_customers_customer_key UNIQUE (customer_id)
);

CREATE TYPE waybill.stripe_sync_state AS ENUM ('pending', 'synced', 'skipped', 'mismatch', 'failed');

-- The outbox: one row per finalized record. `pending` rows are claimed by the
-- worker (lease_until), retried with backoff (attempts, next_attempt_at) and end
-- `synced` (Stripe's total equals Waybill's), `skipped` (zero total: nothing to
-- collect), `mismatch` (Stripe's total differs: flagged, never adjusted) or
-- `failed` (gave up after too many attempts; `waybill stripe-sync --retry` resets).
-- Payment facts that change no status (invoice.payment_failed) live here too.
CREATE TABLE waybill.stripe_outbox (
    project_id          uuid                      NOT NULL,
    record_id           uuid                      NOT NULL,
    state               waybill.stripe_sync_state NOT NULL DEFAULT 'pending',
    enqueued_at         timestamptz               NOT NULL DEFAULT now(),
    attempts            integer                   NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz               NOT NULL DEFAULT now(),
    lease_until         timestamptz,
    last_error          text,
    stripe_invoice_id   text,
    stripe_total_cents  bigint,
    synced_at           timestamptz,
    payment_failures    integer                   NOT NULL DEFAULT 0,
    last_payment_error  text,
    last_payment_failed_at timestamptz,
    updated_at          timestamptz               NOT NULL DEFAULT now(),
    CONSTRAINT stripe_outbox_pkey PRIMARY KEY (project_id, record_id),
    CONSTRAINT stripe_outbox_record_fkey FOREIGN KEY (project_id, record_id)
        REFERENCES waybill.billing_records (project_id, record_id),
    CONSTRAINT stripe_outbox_attempts_check CHECK (attempts >= 0 AND payment_failures >= 0)
);
CREATE INDEX stripe_outbox_due_idx
    ON waybill.stripe_outbox (next_attempt_at) WHERE state = 'pending';
CREATE UNIQUE INDEX stripe_outbox_invoice_key
    ON waybill.stripe_outbox (stripe_invoice_id) WHERE stripe_invoice_id IS NOT NULL;

-- Webhooks find their record by Stripe invoice id.
CREATE INDEX billing_records_stripe_invoice_idx
    ON waybill.billing_records (stripe_invoice_id) WHERE stripe_invoice_id IS NOT NULL;

-- Every verified webhook delivery, processed once per event id, kept for audit.
CREATE TABLE waybill.stripe_webhook_events (
    event_id     text        NOT NULL,
    type         text        NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now(),
    event_created timestamptz,
    outcome      text        NOT NULL DEFAULT 'received',
    deliveries   integer     NOT NULL DEFAULT 1,
    payload      jsonb       NOT NULL,
    CONSTRAINT stripe_webhook_events_pkey PRIMARY KEY (event_id)
);
CREATE INDEX stripe_webhook_events_received_idx ON waybill.stripe_webhook_events (received_at);

-- Enqueue in the transaction that finalizes: a record can never be open without
-- its outbox row. Zero totals are recorded as skipped (nothing to collect).
CREATE FUNCTION waybill.stripe_enqueue_finalized_record() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    INSERT INTO waybill.stripe_outbox (project_id, record_id, state)
    VALUES (NEW.project_id, NEW.record_id,
            CASE WHEN NEW.total_cents = 0 THEN 'skipped' ELSE 'pending' END::waybill.stripe_sync_state)
    ON CONFLICT ON CONSTRAINT stripe_outbox_pkey DO NOTHING;
    RETURN NULL;
END
$$;

CREATE TRIGGER billing_records_stripe_outbox
    AFTER UPDATE OF status ON waybill.billing_records
    FOR EACH ROW WHEN (OLD.status = 'draft' AND NEW.status = 'open')
    EXECUTE FUNCTION waybill.stripe_enqueue_finalized_record();
CREATE TRIGGER billing_records_stripe_outbox_insert
    AFTER INSERT ON waybill.billing_records
    FOR EACH ROW WHEN (NEW.status = 'open')
    EXECUTE FUNCTION waybill.stripe_enqueue_finalized_record();

INSERT INTO waybill.stripe_outbox (project_id, record_id, state)
SELECT r.project_id, r.record_id,
       CASE WHEN r.total_cents = 0 THEN 'skipped' ELSE 'pending' END::waybill.stripe_sync_state
  FROM waybill.billing_records r
 WHERE r.status = 'open' AND r.stripe_invoice_id IS NULL;
