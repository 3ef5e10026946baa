"""Metering reads: usage history over HTTP and the `waybill aggregate` command."""
