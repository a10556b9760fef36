"""Classifier heads: small graphs from an autoencoder's embedding to class probabilities."""

from __future__ import annotations

import numpy as np


def classify(session, embedding: np.ndarray, run_options=None) -> tuple[np.ndarray, float | None]:
    """Class probabilities of one embedding, and how unlike every class it is.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        A head graph: input ``embedding`` (N x D float32), outputs ``probabilities`` (N x K) and,
        in heads trained since it exists, ``ood_score`` (N).
    embedding : numpy.ndarray
        D float32, as ``lens.run_windows`` gives it.
    run_options : onnxruntime.RunOptions, optional
        Passed to the run.

    Returns
    -------
    probabilities : numpy.ndarray
        K float64 probabilities summing to 1.
    ood_score : float or None
        Cosine distance to the nearest training embedding over its calibrated threshold (above 1:
        unlike every class); None for a head without the output.
    """
    names = [o.name for o in session.get_outputs()]
    wanted = ["probabilities"] + (["ood_score"] if "ood_score" in names else [])
    outputs = session.run(wanted, {"embedding": embedding[None].astype(np.float32)}, run_options)
    p = np.clip(outputs[0][0].astype(np.float64), 0, None)
    return p / max(p.sum(), 1e-12), (float(outputs[1][0]) if len(outputs) > 1 else None)
