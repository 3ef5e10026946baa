"""Event ingestion: validate, deduplicate, store durably."""
