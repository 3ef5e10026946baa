"""The SQL the billing endpoints send: each a call to a function in sql/functions or a read."""

from __future__ import annotations

SYNC_SETTINGS = """
UPDATE waybill.billing_settings
   SET price_compute_gb_hour = %(compute)s, price_build_minute = %(build)s,
       price_storage_gb_month = %(storage)s, price_bandwidth_gb = %(bandwidth)s,
       grace_period = %(grace)s, updated_at = now()
 WHERE (price_compute_gb_hour, price_build_minute, price_storage_gb_month, price_bandwidth_gb,
        grace_period) IS DISTINCT FROM (%(compute)s::numeric, %(build)s::numeric,
        %(storage)s::numeric, %(bandwidth)s::numeric, %(grace)s::interval)
"""

PLANS = """
SELECT p.plan_id, p.name, p.base_fee_cents, p.currency,
       p.included_compute_gb_hours, p.included_build_minutes, p.included_storage_gb_months,
       p.included_bandwidth_gb, p.included_custom_domains,
       coalesce(p.rate_compute_gb_hour, s.price_compute_gb_hour),
       coalesce(p.rate_build_minute, s.price_build_minute),
       coalesce(p.rate_storage_gb_month, s.price_storage_gb_month),
       coalesce(p.rate_bandwidth_gb, s.price_bandwidth_gb),
       coalesce(p.rate_custom_domain, s.price_custom_domain),
       p.stripe_price_id
  FROM waybill.pricing_plans p CROSS JOIN waybill.billing_settings s
 ORDER BY p.sort_order, p.plan_id
"""

DEFAULT_RATES = """
SELECT price_compute_gb_hour, price_build_minute, price_storage_gb_month, price_bandwidth_gb,
       price_custom_domain, currency
  FROM waybill.billing_settings
"""

ESTIMATE = """
SELECT line_no, kind::text, metric, description, amount_cents, quantity, included, billable,
       unit, unit_price, (SELECT currency FROM waybill.billing_settings)
  FROM waybill.price_estimate(%(plan)s, %(month)s, %(hours)s, %(replicas)s, %(cpu)s,
                              %(memory)s, %(storage)s, %(build_minutes)s, %(bandwidth)s,
                              %(domains)s)
 ORDER BY line_no
"""

SET_SUBSCRIPTION = """
SELECT subscription_id, plan_id, effective_at
  FROM waybill.set_subscription(%(project)s, %(plan)s, %(effective_at)s, 'api', NULL)
"""

GRANT_CREDIT = """
INSERT INTO waybill.credits (project_id, amount_cents, reason, expires_at, currency)
SELECT %(project)s, %(amount)s, %(reason)s, %(expires_at)s, currency FROM waybill.billing_settings
RETURNING credit_id, project_id, amount_cents, currency, reason, granted_at, expires_at
"""

USAGE_CURRENT = "SELECT waybill.usage_current(%(project)s, %(now)s)::text"

INVOICES = """
SELECT record_id, project_id, to_char(period_start, 'YYYY-MM'),
       period_start::timestamp AT TIME ZONE 'UTC',
       (period_start + interval '1 month')::timestamp AT TIME ZONE 'UTC',
       status::text, currency, subtotal_cents, credits_cents, total_cents, carried_forward_cents,
       usage_as_of, computed_at, finalized_at, stripe_invoice_id
  FROM waybill.billing_records
 WHERE project_id = %(project)s
 ORDER BY period_start DESC
 LIMIT %(limit)s
"""

INVOICE_LINES = """
SELECT record_id, line_no, kind::text, metric, description, amount_cents, plan_id,
       segment_from, segment_to, quantity, included, billable, unit, unit_price,
       to_char(adjustment_period, 'YYYY-MM'), credit_id
  FROM waybill.billing_record_lines
 WHERE project_id = %(project)s AND record_id = ANY(%(records)s)
 ORDER BY record_id, line_no
"""
