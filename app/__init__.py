"""Waybill: usage metering and billing."""
