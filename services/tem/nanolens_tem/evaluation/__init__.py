"""Evaluation harnesses: the tables of docs/tem-evaluation.md, the baselines' tuning grid, data loaders for the
public evaluation sets (NANOLENS_DATA) and figures. Not part of serving."""
