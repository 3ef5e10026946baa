"""Pricing and billing: plans, subscriptions, credits, monthly records, estimates.

The money is computed in SQL (sql/functions/price_segment.sql and the billing
functions that call it); this package only validates input, calls those
functions and shapes the answers. See docs/billing.md.
"""
