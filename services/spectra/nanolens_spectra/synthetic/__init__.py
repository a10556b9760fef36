"""Seeded generators of synthetic spectra with ground truth (DNA-SWCNT Raman spectra per endosome class, and
spectral maps). Used for training, evaluation, tests and the demo; serving never runs them."""
