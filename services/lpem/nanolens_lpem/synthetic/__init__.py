"""Seeded liquid-cell movie generators with ground truth."""
