"""SQL for the Stripe sync and webhooks (named blocks; parameters always bound)."""

from __future__ import annotations

# Claim due outbox rows: a lease, not a held transaction, so Stripe calls never run
# inside a database transaction and a crashed worker's rows come back after the lease.
CLAIM = """
UPDATE waybill.stripe_outbox o
   SET lease_until = %(now)s + %(lease)s, attempts = o.attempts + 1, updated_at = now()
  FROM (SELECT project_id, record_id FROM waybill.stripe_outbox
         WHERE state = 'pending' AND next_attempt_at <= %(now)s
           AND (lease_until IS NULL OR lease_until <= %(now)s)
           AND (%(record)s::uuid IS NULL OR record_id = %(record)s::uuid)
         ORDER BY next_attempt_at
         LIMIT %(limit)s
           FOR UPDATE SKIP LOCKED) due
 WHERE o.project_id = due.project_id AND o.record_id = due.record_id
RETURNING o.project_id, o.record_id, o.attempts, o.stripe_invoice_id
"""

RECORD = """
SELECT status::text, currency, total_cents, to_char(period_start, 'YYYY-MM')
  FROM waybill.billing_records WHERE project_id = %s AND record_id = %s
"""

LINES = """
SELECT line_no, description, amount_cents FROM waybill.billing_record_lines
 WHERE project_id = %s AND record_id = %s ORDER BY line_no
"""

CUSTOMER = "SELECT customer_id FROM waybill.stripe_customers WHERE project_id = %s"

LOCK_CUSTOMER = "SELECT pg_advisory_xact_lock(hashtext('waybill.stripe_customer'), hashtext(%s::text))"

INSERT_CUSTOMER = """
INSERT INTO waybill.stripe_customers (project_id, customer_id) VALUES (%s, %s)
ON CONFLICT ON CONSTRAINT stripe_customers_pkey DO NOTHING
"""

SET_INVOICE = """
WITH o AS (
    UPDATE waybill.stripe_outbox SET stripe_invoice_id = %(invoice)s, updated_at = now()
     WHERE project_id = %(project)s AND record_id = %(record)s
)
UPDATE waybill.billing_records SET stripe_invoice_id = %(invoice)s, updated_at = now()
 WHERE project_id = %(project)s AND record_id = %(record)s
   AND stripe_invoice_id IS DISTINCT FROM %(invoice)s
"""

FINISH = """
UPDATE waybill.stripe_outbox
   SET state = %(state)s::waybill.stripe_sync_state, stripe_total_cents = %(stripe_total)s,
       last_error = %(error)s,
       synced_at = CASE WHEN %(state)s::waybill.stripe_sync_state = 'synced' THEN now() END,
       lease_until = NULL, updated_at = now()
 WHERE project_id = %(project)s AND record_id = %(record)s
"""

FAIL = """
UPDATE waybill.stripe_outbox
   SET state = %(state)s::waybill.stripe_sync_state, last_error = %(error)s, next_attempt_at = %(next)s,
       lease_until = NULL, updated_at = now()
 WHERE project_id = %(project)s AND record_id = %(record)s
"""

RETRY_FAILED = """
UPDATE waybill.stripe_outbox
   SET state = 'pending', attempts = 0, next_attempt_at = now(), lease_until = NULL, updated_at = now()
 WHERE state = 'failed' AND (%(record)s::uuid IS NULL OR record_id = %(record)s::uuid)
"""

STATUS = """
SELECT o.project_id, o.record_id, to_char(r.period_start, 'YYYY-MM'), o.state::text, o.attempts,
       o.next_attempt_at, o.stripe_invoice_id, r.total_cents, o.stripe_total_cents, o.last_error
  FROM waybill.stripe_outbox o
  JOIN waybill.billing_records r ON r.project_id = o.project_id AND r.record_id = o.record_id
 WHERE o.state <> 'synced' AND o.state <> 'skipped'
 ORDER BY o.enqueued_at
"""

# The event row is written first, in the same transaction as its effects: a
# delivery either did everything once or nothing (and Stripe delivers it again).
INSERT_EVENT = """
INSERT INTO waybill.stripe_webhook_events AS e (event_id, type, event_created, payload)
VALUES (%(id)s, %(type)s, %(created)s, %(payload)s::jsonb)
ON CONFLICT ON CONSTRAINT stripe_webhook_events_pkey DO UPDATE SET deliveries = e.deliveries + 1
RETURNING (xmax = 0) AS inserted, outcome
"""

SET_OUTCOME = "UPDATE waybill.stripe_webhook_events SET outcome = %s WHERE event_id = %s"

FIND_RECORD = """
SELECT project_id, record_id, status::text, stripe_invoice_id FROM waybill.billing_records
 WHERE stripe_invoice_id = %(invoice)s
    OR (project_id = %(project)s::uuid AND record_id = %(record)s::uuid)
 ORDER BY (stripe_invoice_id = %(invoice)s) DESC NULLS LAST
 LIMIT 1
   FOR UPDATE
"""

SET_STATUS = """
UPDATE waybill.billing_records
   SET status = %(status)s::waybill.billing_status, updated_at = now(),
       stripe_invoice_id = coalesce(stripe_invoice_id, %(invoice)s)
 WHERE project_id = %(project)s AND record_id = %(record)s
"""

PAYMENT_FAILED = """
UPDATE waybill.stripe_outbox
   SET payment_failures = payment_failures + 1, last_payment_error = %(error)s,
       last_payment_failed_at = %(at)s, updated_at = now()
 WHERE project_id = %(project)s AND record_id = %(record)s
"""

PROJECT_OF_CUSTOMER = "SELECT project_id FROM waybill.stripe_customers WHERE customer_id = %s"

PLAN_OF_PRICE = "SELECT plan_id FROM waybill.pricing_plans WHERE stripe_price_id = %s"

NEWER_STRIPE_CHANGE = """
SELECT 1 FROM waybill.subscriptions
 WHERE project_id = %s AND superseded_at IS NULL AND source = 'stripe' AND effective_at > %s
"""

PLAN_IN_FORCE = """
SELECT plan_id, stripe_subscription_id FROM waybill.subscriptions
 WHERE project_id = %s AND superseded_at IS NULL AND effective_at <= %s
 ORDER BY effective_at DESC LIMIT 1
"""

SET_SUBSCRIPTION = "SELECT * FROM waybill.set_subscription(%s, %s, %s, 'stripe', %s)"
