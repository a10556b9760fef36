"""Seeded generators of SEM-like images (used for tests and as the training fallback without real data)."""
