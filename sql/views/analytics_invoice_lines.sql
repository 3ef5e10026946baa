-- analytics.invoice_lines: every line of every billing record, with its month
-- and status. amount_cents is the line's rounded amount (credits negative).
-- Read-only; for analysts (role waybill_analyst). No side effects.
CREATE OR REPLACE VIEW analytics.invoice_lines AS
SELECT l.record_id, l.project_id, r.period_start AS month, r.status, l.line_no, l.kind,
       l.metric, l.description, l.plan_id, l.segment_from, l.segment_to, l.quantity,
       l.included, l.billable, l.unit, l.unit_price, l.amount_cents, l.adjustment_period,
       l.credit_id
  FROM waybill.billing_record_lines l
  JOIN waybill.billing_records r ON r.project_id = l.project_id AND r.record_id = l.record_id;
