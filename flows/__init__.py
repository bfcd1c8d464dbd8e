"""Prefect flows: they compose tasks and decide; they never talk to a backend directly."""
