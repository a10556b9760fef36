"""Seed ranges of the synthetic data splits (disjoint), and the evaluation image parameters.

- training:  seeds ``[0, TUNE_SEED0)``
- tuning (baseline parameters, validation): ``[TUNE_SEED0, TEST_SEED0)``
- test (reported numbers only): ``[TEST_SEED0, ...)``
"""

from __future__ import annotations

from nanolens_tem.synthetic.agglomerates import SynthParams
from nanolens_tem.synthetic.faceted import FacetedParams

TRAIN_SEED0 = 0
TUNE_SEED0 = 1_000_000
TEST_SEED0 = 2_000_000


def eval_params(shape: tuple[int, int] = (256, 256)) -> SynthParams:
    """Held-out image distribution: GMD 14-34 px (log-uniform), GSD 1.1-1.4, 1-40 per agglomerate."""
    return SynthParams(shape=shape, gmd=(14.0, 34.0), gsd=(1.1, 1.4), particles_per_agglomerate=(1, 40))


def eval_params_small(shape: tuple[int, int] = (256, 256)) -> SynthParams:
    """Frei & Kruis-like condition: as :func:`eval_params` but 1-5 particles per agglomerate."""
    return SynthParams(shape=shape, gmd=(14.0, 34.0), gsd=(1.1, 1.4), particles_per_agglomerate=(1, 5),
                       max_agglomerates=20, coverage=0.25)


def eval_params_faceted(shape: tuple[int, int] = (256, 256)) -> FacetedParams:
    """Faceted crystals packed on a film (:mod:`nanolens_tem.synthetic.faceted`): GMD 14-34 px, GSD 1.05-1.25."""
    return FacetedParams(shape=shape, gmd=(14.0, 34.0), gsd=(1.05, 1.25))
