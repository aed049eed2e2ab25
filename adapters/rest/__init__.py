"""REST adapter (FastAPI in, httpx out)."""
