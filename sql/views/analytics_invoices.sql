-- analytics.invoices: one row per billing record (invoice), any status.
-- Amounts are integer cents in `currency`; `month` is the billed UTC month.
-- Read-only; for analysts (role waybill_analyst). No side effects.
CREATE OR REPLACE VIEW analytics.invoices AS
SELECT r.record_id, r.project_id, r.period_start AS month, r.status, r.currency,
       r.subtotal_cents, r.credits_cents, r.total_cents, r.carried_forward_cents,
       (SELECT count(*) FROM waybill.billing_record_lines l
         WHERE l.project_id = r.project_id AND l.record_id = r.record_id) AS line_count,
       r.usage_as_of, r.computed_at, r.finalized_at, r.stripe_invoice_id
  FROM waybill.billing_records r;
