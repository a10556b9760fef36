"""Harnesses behind docs/sem-evaluation.md and loaders for the public SEM sets (NANOLENS_DATA)."""
