"""Stripe: invoices out (outbox worker), payment status in (webhooks). See docs/stripe.md."""
