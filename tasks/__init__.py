"""Prefect tasks: thin wrappers that add retries, caching, logging and I/O around the core."""
