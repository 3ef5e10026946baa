-- analytics.monthly_revenue: revenue per billed month and currency, finalized
-- records only (drafts may still change). billed = sum of totals after credits;
-- base/usage/adjustment split the charges before credits; paid/outstanding by
-- status (void records count in neither).
-- Read-only; for analysts (role waybill_analyst). No side effects.
CREATE OR REPLACE VIEW analytics.monthly_revenue AS
SELECT r.period_start AS month, r.currency,
       count(*) AS invoices,
       count(DISTINCT r.project_id) AS projects,
       sum(x.base_fee_cents) AS base_fee_cents,
       sum(x.usage_cents) AS usage_cents,
       sum(x.adjustment_cents) AS adjustment_cents,
       sum(r.credits_cents) AS credits_cents,
       sum(r.total_cents) FILTER (WHERE r.status <> 'void') AS billed_cents,
       coalesce(sum(r.total_cents) FILTER (WHERE r.status = 'paid'), 0) AS paid_cents,
       coalesce(sum(r.total_cents) FILTER (WHERE r.status IN ('open', 'uncollectible')), 0)
           AS outstanding_cents
  FROM waybill.billing_records r
  CROSS JOIN LATERAL (
      SELECT coalesce(sum(l.amount_cents) FILTER (WHERE l.kind = 'base_fee'), 0) AS base_fee_cents,
             coalesce(sum(l.amount_cents) FILTER (WHERE l.kind = 'usage'), 0) AS usage_cents,
             coalesce(sum(l.amount_cents) FILTER (WHERE l.kind = 'adjustment'), 0) AS adjustment_cents
        FROM waybill.billing_record_lines l
       WHERE l.project_id = r.project_id AND l.record_id = r.record_id
  ) x
 WHERE r.status <> 'draft'
 GROUP BY r.period_start, r.currency;
