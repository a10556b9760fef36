"""Evaluation harnesses: the out-of-domain tables of docs/spectra-evaluation.md and loaders for the
public spectra sets (NANOLENS_DATA). Not part of serving."""
