"""Evaluation harnesses and public-data loaders (they read NANOLENS_DATA)."""
