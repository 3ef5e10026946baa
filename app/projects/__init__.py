"""Project administration: API keys (internal endpoints)."""
