"""Classifier heads: small graphs from an autoencoder's embedding to class probabilities."""

from __future__ import annotations

import numpy as np


def classify(session, embedding: np.ndarray, run_options=None) -> np.ndarray:
    """Class probabilities of one embedding.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        A head graph: input ``embedding`` (N x D float32), output ``probabilities`` (N x K).
    embedding : numpy.ndarray
        D float32, as ``lens.run_windows`` gives it.
    run_options : onnxruntime.RunOptions, optional
        Passed to the run.

    Returns
    -------
    numpy.ndarray
        K float64 probabilities summing to 1.
    """
    out = session.run(["probabilities"], {"embedding": embedding[None].astype(np.float32)}, run_options)[0][0]
    p = np.clip(out.astype(np.float64), 0, None)
    return p / max(p.sum(), 1e-12)
