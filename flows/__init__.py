"""Prefect flows of forge (thin wrappers over the library; see flows/forge_flow.py)."""
