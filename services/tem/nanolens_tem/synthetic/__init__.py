"""Seeded generators of synthetic TEM images with ground truth: agglomerates of spheres (agglomerates) and
faceted crystals (faceted). Used for training and evaluation; serving never runs them."""
