"""Frei & Kruis (2018) ANN sizing: agglomerate features -> particle count -> primary-particle areas.

Serving side (numpy + onnxruntime). One ONNX graph holds

- the particle-number classifier, 13 -> 39 tanh -> softmax over 1..5 particles, and
- five per-count regressors (13 -> h_n tanh -> n), ``h_n`` in :data:`HIDDEN`, predicting
  ``ln(a_i / A)`` for the ``n`` primary-particle areas ``a_i`` (sorted descending) of an
  agglomerate of projected area ``A``.

Inputs are the 13 features of :mod:`nanolens_tem.science.features`, dimensional ones log-transformed,
then standardised with the training mean and standard deviation stored in the bundle manifest.
Each agglomerate contributes ``n`` diameters ``2 sqrt(a_i / pi)``. Agglomerates of more than five
particles are outside the model's range (a limitation of the reference method).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanolens_tem.science.features import FEATURE_NAMES, agglomerate_features, segment_agglomerates
from nanolens_tem.science.segmentation import Segmentation, centres

__all__ = ["HIDDEN", "LOG_FEATURES", "transform_features", "decode", "AnnSizer"]

MAX_COUNT = 5
HIDDEN = (11, 32, 64, 96, 124)
LOG_FEATURES = ("area", "perimeter", "convex_area", "major_axis", "minor_axis", "equivalent_diameter",
                "feret_max", "filled_area")


def transform_features(f: np.ndarray) -> np.ndarray:
    """Log-transform the dimensional features of agglomerates.

    Parameters
    ----------
    f : numpy.ndarray
        (n, 13) features in the order of :data:`FEATURE_NAMES`.

    Returns
    -------
    numpy.ndarray
        The same array with the columns named in :data:`LOG_FEATURES` replaced by their logarithms.
    """
    f = np.array(f, float, copy=True)
    for name in LOG_FEATURES:
        j = FEATURE_NAMES.index(name)
        f[:, j] = np.log(np.maximum(f[:, j], 1e-3))
    return f


def decode(logits: np.ndarray, log_frac: np.ndarray, area: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Particle counts and per-agglomerate diameters from the network outputs.

    Parameters
    ----------
    logits : numpy.ndarray
        (n, 5) class scores for 1..5 particles per agglomerate.
    log_frac : numpy.ndarray
        (n, 5, 5): row ``k`` of agglomerate ``i`` is the output of the regressor for ``k + 1``
        particles (its first ``k + 1`` entries are used), log area fractions.
    area : numpy.ndarray
        (n,) agglomerate areas, px^2.

    Returns
    -------
    counts : numpy.ndarray
        (n,) predicted number of particles (1..5) in each agglomerate.
    diameters : list of numpy.ndarray
        For each agglomerate, the equivalent-circle diameters (px) of its particles.
    """
    counts = np.argmax(logits, 1) + 1
    diams = [2.0 * np.sqrt(np.exp(log_frac[i, c - 1, :c]) * area[i] / np.pi) for i, c in enumerate(counts)]
    return counts, diams


@dataclass
class AnnSizer:
    """The ANN sizing pipeline; load a bundle folder with :meth:`load`."""

    session: object
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def load(cls, folder: Path) -> AnnSizer:
        import onnxruntime as ort

        folder = Path(folder)
        man = json.loads((folder / "manifest.json").read_text())
        pre = man["preprocessing"]
        sess = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
        return cls(sess, np.asarray(pre["feature_mean"], np.float32), np.asarray(pre["feature_std"], np.float32))

    def predict(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = ((transform_features(features) - self.mean) / self.std).astype(np.float32)
        logits, reg = self.session.run(None, {self.session.get_inputs()[0].name: x})
        return logits, reg

    def segment(self, image: np.ndarray, *, dark_particles: bool = True) -> Segmentation:
        """Agglomerate labels, and the predicted primary-particle diameters (px) of all agglomerates.

        ``labels`` are agglomerates, not particles (the method does not locate particles);
        ``centres`` repeat each agglomerate's centroid for its particles.
        """
        agg = segment_agglomerates(image, dark_particles=dark_particles)
        n = int(agg.max())
        if n == 0:
            return Segmentation(agg, np.zeros(0), np.zeros((0, 2)))
        f = agglomerate_features(image, agg, dark_particles=dark_particles)
        logits, reg = self.predict(f)
        counts, diams = decode(logits, reg, f[:, 0])
        cent = centres(agg)
        return Segmentation(agg, np.concatenate(diams), np.repeat(cent, counts, axis=0))
