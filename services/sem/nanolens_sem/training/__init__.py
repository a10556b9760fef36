"""Torch side of the SEM service: the autoencoder, its training and export, classifier heads."""
