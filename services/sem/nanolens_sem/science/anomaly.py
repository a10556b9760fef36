"""Reconstruction error read against what the autoencoder saw in training: an error per block
and per image turned into percentiles of the training distribution."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanolens_sem.science.images import area_resize, fit_side

#: blocks above this percentile of the training blocks count as anomalous
ANOMALOUS_PERCENTILE = 99.9


@dataclass(frozen=True)
class Calibration:
    """Quantiles of the reconstruction error on the model's training images (from the manifest)."""

    percent: np.ndarray  # quantile levels, 0-100
    block_quantiles: np.ndarray  # mean squared error per block at those levels
    tile_quantiles: np.ndarray  # mean squared error per tile
    block_px: int
    tile_px: int

    @classmethod
    def from_manifest(cls, entry: dict) -> Calibration:
        """The ``calibration`` entry of an autoencoder's manifest.

        Parameters
        ----------
        entry : dict
            Keys ``percent``, ``block_error_quantiles``, ``tile_error_quantiles``, ``block``, ``tile``.

        Returns
        -------
        Calibration
        """
        return cls(np.asarray(entry["percent"], np.float64), np.asarray(entry["block_error_quantiles"], np.float64),
                   np.asarray(entry["tile_error_quantiles"], np.float64), int(entry["block"]), int(entry["tile"]))


def percentile_of(values: np.ndarray, percent: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Where values fall in a distribution given by its quantiles (linear between them).

    Parameters
    ----------
    values : numpy.ndarray
        Errors, any shape.
    percent : numpy.ndarray
        Quantile levels, 0-100, increasing.
    quantiles : numpy.ndarray
        The distribution's values at those levels (non-decreasing).

    Returns
    -------
    numpy.ndarray
        Percentiles 0-100 of ``values`` (0 below the smallest quantile, 100 above the largest).
    """
    q, keep = np.unique(quantiles, return_index=True)  # ties: np.interp needs increasing x
    return np.interp(values, q, percent[keep]).astype(np.float32)


@dataclass
class AnomalyMaps:
    """An image's anomaly maps and scores."""

    error_map: np.ndarray  # h x w float32, block errors shrunk to max_side
    percentile_map: np.ndarray  # h x w float32
    image_error: float
    image_percentile: float
    anomalous_fraction: float
    psnr_db: float
    tile_px: int


def score(block_errors: np.ndarray, squared_error: float, pixels: int, calibration: Calibration,
          max_side: int) -> AnomalyMaps:
    """Anomaly maps and scores of one image.

    Parameters
    ----------
    block_errors : numpy.ndarray
        Mean squared error per block (``lens.run_windows``).
    squared_error : float
        Sum of squared errors over the image.
    pixels : int
        Pixels of the image.
    calibration : Calibration
        The model's training-set error quantiles.
    max_side : int
        Largest side of the returned maps, px.

    Returns
    -------
    AnomalyMaps
        Error and percentile maps, the image's mean squared error and its percentile among the
        training tiles, the fraction of blocks above ``ANOMALOUS_PERCENTILE`` and the PSNR (dB,
        peak 1).
    """
    percentiles = percentile_of(block_errors, calibration.percent, calibration.block_quantiles)
    threshold = np.interp(ANOMALOUS_PERCENTILE, calibration.percent, calibration.block_quantiles)
    mse = squared_error / max(pixels, 1)
    shape = fit_side(block_errors.shape, max_side)
    return AnomalyMaps(area_resize(block_errors, shape), area_resize(percentiles, shape), float(mse),
                       float(percentile_of(np.asarray(mse), calibration.percent, calibration.tile_quantiles)),
                       float((block_errors > threshold).mean()), float(10 * np.log10(1.0 / max(mse, 1e-12))),
                       calibration.tile_px)
