"""The reference spectra classifier of Gravely & Roxbury (ACS Nano 2021), as one torch module.

    spectra (N, C) -> per-spectrum L2 normalisation -> PCA to 95 % of the variance (fitted
    with numpy on the training fold, frozen, whitened) -> MLP 2 x 25 ReLU -> softmax (N, K)

Normalisation and centring live inside the graph so that every consumer of the exported ONNX
model (server, notebooks, other languages) feeds it the same thing: preprocessed but
unnormalised spectra (see ``nanolens_spectra.science.preprocessing``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
from torch import nn

# Added to the L2 norm so that an all-zero spectrum maps to zeros instead of NaN.
NORM_EPS = 1e-6


@dataclass(frozen=True)
class TrainParams:
    """Model and optimiser settings. ``variance`` is the fraction of variance the PCA keeps."""

    variance: float = 0.95
    hidden: tuple[int, ...] = (25, 25)
    epochs: int = 100
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-3

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        if not 0.0 < self.variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], got {self.variance}")
        if self.epochs < 1 or self.batch_size < 1 or any(h < 1 for h in self.hidden):
            raise ValueError("epochs, batch_size and hidden sizes must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainParams:
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown training parameters: {', '.join(unknown)}")
        return cls(**data)


def normalise(spectra: np.ndarray) -> np.ndarray:
    """numpy twin of the in-graph normalisation: each row divided by (its L2 norm + eps)."""
    x = np.asarray(spectra, dtype=np.float32)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + np.float32(NORM_EPS))


@dataclass(frozen=True)
class PCAFit:
    """Principal components of normalised training spectra.

    ``components`` (k, C) rows are unit loadings, ``scale`` (k,) the score standard deviations
    used for whitening, ``explained`` (min(N, C),) the variance ratio of every component.
    """

    mean: np.ndarray
    components: np.ndarray
    scale: np.ndarray
    explained: np.ndarray

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])


def n_components_for(explained: np.ndarray, variance: float) -> int:
    """Smallest k whose first k components explain more than ``variance`` of the total (the
    rule scikit-learn's ``PCA(n_components=0.95)`` uses), at least 1."""
    cumulative = np.cumsum(explained)
    k = int(np.searchsorted(cumulative, variance, side="right")) + 1
    return int(min(max(k, 1), explained.size))


def fit_pca(spectra: np.ndarray, variance: float = 0.95, n_components: int | None = None) -> PCAFit:
    """PCA of the L2-normalised ``spectra`` by SVD (float64), keeping ``variance`` of it, or
    exactly ``n_components`` components if given (at most N - 1: the centred spectra span no more).

    Component signs are fixed (largest loading positive) so the result does not depend on the
    LAPACK build's sign choice.
    """
    x = normalise(spectra).astype(np.float64)
    if x.shape[0] < 2:
        raise ValueError("PCA needs at least 2 spectra")
    mean = x.mean(axis=0)
    _, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    var = s**2 / (x.shape[0] - 1)
    total = var.sum()
    if total <= 0:
        raise ValueError("all training spectra are identical after normalisation")
    explained = var / total
    if n_components is None:
        k = n_components_for(explained, variance)
    elif n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    else:
        k = min(n_components, x.shape[0] - 1, explained.size)
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    comps = comps * signs[:, None]
    scale = np.sqrt(np.maximum(var[:k], total * 1e-12))
    return PCAFit(mean=mean, components=comps, scale=scale, explained=explained)


class SpectraClassifier(nn.Module):
    """normalise -> frozen whitened PCA (one Linear layer) -> MLP (ReLU) -> softmax.

    Input ``spectra`` (N, C) float32, output class probabilities (N, K) float32.
    """

    def __init__(self, pca: PCAFit, hidden: tuple[int, ...], class_names: tuple[str, ...]):
        super().__init__()
        self.class_names = tuple(class_names)
        k, c = pca.components.shape
        self.pca = nn.Linear(c, k)
        # Whitened scores: z = (x - mean) @ W.T / scale, written as one affine map.
        w = pca.components / pca.scale[:, None]
        with torch.no_grad():
            self.pca.weight.copy_(torch.from_numpy(w.astype(np.float32)))
            self.pca.bias.copy_(torch.from_numpy((-(w @ pca.mean)).astype(np.float32)))
        self.pca.requires_grad_(False)
        # For the out-of-domain score: the unwhitened loadings and the mean, and the calibration
        # (limits of T^2 and Q and the score threshold; 1 until set_ood_calibration).
        self.register_buffer("pca_mean", torch.from_numpy(pca.mean.astype(np.float32)))
        self.register_buffer("pca_loadings", torch.from_numpy((pca.components * pca.scale[:, None]).astype(np.float32)))
        self.register_buffer("ood_limits", torch.ones(3))
        layers: list[nn.Module] = []
        width = k
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, len(self.class_names)))
        self.mlp = nn.Sequential(*layers)

    @property
    def n_features(self) -> int:
        return int(self.pca.in_features)

    @property
    def n_components(self) -> int:
        return int(self.pca.out_features)

    def logits(self, spectra: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(spectra, dim=1, keepdim=True)
        return self.mlp(self.pca(spectra / (norm + NORM_EPS)))

    def ood_statistics(self, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Hotelling's T^2 (squared whitened PCA scores, summed) and Q (squared distance of the
        normalised spectrum from the PCA subspace) of each spectrum, both (N,)."""
        norm = torch.linalg.vector_norm(spectra, dim=1, keepdim=True)
        xn = spectra / (norm + NORM_EPS)
        z = self.pca(xn)
        residual = xn - self.pca_mean - z @ self.pca_loadings
        return (z * z).sum(dim=1), (residual * residual).sum(dim=1)

    def set_ood_calibration(self, t2_limit: float, q_limit: float, threshold: float) -> None:
        """Fix the out-of-domain score: max(T^2 / t2_limit, Q / q_limit) / threshold."""
        with torch.no_grad():
            self.ood_limits.copy_(torch.tensor([t2_limit, q_limit, threshold], dtype=torch.float32))

    def forward(self, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities (N, K) and the out-of-domain score (N,): above 1, out of domain."""
        t2, q = self.ood_statistics(spectra)
        score = torch.maximum(t2 / self.ood_limits[0], q / self.ood_limits[1]) / self.ood_limits[2]
        return torch.softmax(self.logits(spectra), dim=1), score


@contextlib.contextmanager
def single_threaded() -> Iterator[None]:
    """Run torch on one thread (the build machines are shared, and one thread keeps the
    floating-point reduction order, hence the trained weights, reproducible)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_training_data(spectra: np.ndarray, labels: np.ndarray, n_classes: int) -> tuple[
        np.ndarray, np.ndarray]:
    x = np.ascontiguousarray(spectra, dtype=np.float32)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"spectra must be (N >= 2, C), got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), got {y.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("spectra contain NaN or Inf")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"labels must be integers in 0..{n_classes - 1}")
    return x, y.astype(np.int64)


def fit(spectra: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...] | list[str],
        params: TrainParams | None = None, seed: int = 0, n_components: int | None = None) -> SpectraClassifier:
    """Train the classifier on preprocessed ``spectra`` (N, C) with integer ``labels`` (N,).

    The PCA is fitted on these spectra only (so, inside cross-validation, on the training fold
    only), keeping ``params.variance`` or, if given, ``n_components`` components; the MLP is
    trained with Adam on the cross-entropy in mini-batches. Deterministic in ``seed``:
    initialisation and shuffling draw from a private torch generator state.
    """
    params = params or TrainParams()
    names = tuple(class_names)
    x, y = _check_training_data(spectra, labels, len(names))
    pca = fit_pca(x, params.variance, n_components)
    with single_threaded(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SpectraClassifier(pca, params.hidden, names)
        gen = torch.Generator().manual_seed(seed)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt = torch.optim.Adam(model.mlp.parameters(), lr=params.learning_rate,
                               weight_decay=params.weight_decay)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(params.epochs):
            order = torch.randperm(x.shape[0], generator=gen)
            for start in range(0, x.shape[0], params.batch_size):
                idx = order[start:start + params.batch_size]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model.logits(xt[idx]), yt[idx])
                loss.backward()
                opt.step()
    model.eval()
    return model


def predict_proba(model: SpectraClassifier, spectra: np.ndarray) -> np.ndarray:
    """Class probabilities (N, K) float32 from the torch model."""
    with single_threaded(), torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(spectra, dtype=np.float32)))[0].numpy()


def ood_statistics(model: SpectraClassifier, spectra: np.ndarray) -> np.ndarray:
    """(N, 2) float64: Hotelling's T^2 and Q of each preprocessed spectrum in the model's PCA."""
    with single_threaded(), torch.no_grad():
        t2, q = model.ood_statistics(torch.from_numpy(np.ascontiguousarray(spectra, dtype=np.float32)))
    return np.stack([t2.numpy(), q.numpy()], axis=1).astype(np.float64)


def ood_scores(model: SpectraClassifier, spectra: np.ndarray) -> np.ndarray:
    """(N,) float32 out-of-domain scores from the torch model (as the ONNX graph's ``ood_score``)."""
    with single_threaded(), torch.no_grad():
        return model(torch.from_numpy(np.ascontiguousarray(spectra, dtype=np.float32)))[1].numpy()
