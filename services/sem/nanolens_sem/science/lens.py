"""The autoencoder over an image of any size: windows of bounded size, the lens layers' maps
shrunk as they come, the reconstruction error per block, and the image's embedding. Memory is
bounded by the window and the kept maps, not by the image."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nanolens_sem.science.images import MULTIPLE, area_resize, fit_side, to_unit, windows

LAYERS = ("enc1", "enc2", "enc3", "enc4", "latent")
STRIDES = {"enc1": 2, "enc2": 4, "enc3": 8, "enc4": 16, "latent": 16}
EMBED_LAYERS = ("enc1", "enc2", "enc3", "enc4")  # the shipped model's; a manifest names its own
OUTPUTS = ("reconstruction", "embedding", *LAYERS)
BLOCK = MULTIPLE  # side of an anomaly block, px: windows are multiples of it, so blocks never straddle two


@dataclass
class LayerMaps:
    """One layer's activations over the whole image: maps shrunk to the kept size, and sums for
    its statistics."""

    name: str
    channels: int
    stride: int
    maps: np.ndarray  # C x h x w float32, area means
    total: float = 0.0
    total_sq: float = 0.0
    zeros: int = 0
    count: int = 0
    peak: float = 0.0
    channel_sums: np.ndarray | None = None

    @property
    def mean(self) -> float:
        return self.total / max(self.count, 1)

    @property
    def std(self) -> float:
        return float(np.sqrt(max(self.total_sq / max(self.count, 1) - self.mean ** 2, 0.0)))

    @property
    def sparsity(self) -> float:
        return self.zeros / max(self.count, 1)

    def channel_means(self) -> np.ndarray:
        return self.channel_sums / max(self.count // self.channels, 1)


@dataclass
class LensResult:
    """What one pass gave: kept layers, the shrunk reconstruction, the block errors, the embedding."""

    layers: list[LayerMaps]
    reconstruction: np.ndarray  # h x w float32, 0-1, the image's shape shrunk to max_side
    block_errors: np.ndarray  # ceil(H / BLOCK) x ceil(W / BLOCK) float32 mean squared errors
    squared_error: float  # sum over the image of the squared reconstruction error
    embedding: np.ndarray  # D float32, standardised and L2-normalised
    raw_embedding: np.ndarray  # D float64 moments before standardisation
    windows: int


def _paste(target: np.ndarray, source: np.ndarray, r0: int, c0: int, full: tuple[int, int]) -> None:
    """Area-shrink ``source`` (... x h x w, placed at r0, c0 of a grid of shape ``full``) into
    ``target`` (... x th x tw covering the same grid)."""
    th, tw = target.shape[-2:]
    fh, fw = th / full[0], tw / full[1]
    a0, a1 = round(r0 * fh), round((r0 + source.shape[-2]) * fh)
    b0, b1 = round(c0 * fw), round((c0 + source.shape[-1]) * fw)
    if a1 > a0 and b1 > b0:
        target[..., a0:a1, b0:b1] = area_resize(source, (a1 - a0, b1 - b0))


def _pad_window(part: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """A window cut at the image's bottom or right edge, reflect-padded to its full size (as the
    whole image padded to a multiple of 16 would give it)."""
    ph, pw = rows - part.shape[0], cols - part.shape[1]
    if ph or pw:
        mode = "reflect" if part.shape[0] > ph and part.shape[1] > pw else "edge"
        part = np.pad(part, ((0, ph), (0, pw)), mode=mode)
    return np.ascontiguousarray(part, dtype=np.float32)


def run_windows(session, image: np.ndarray, layers=LAYERS, window: int = 512, max_side: int = 256,
                run_options=None, embed_layers=EMBED_LAYERS, standardise=None, scale=None) -> LensResult:
    """Run the autoencoder graph over ``image`` window by window.

    Parameters
    ----------
    session : onnxruntime.InferenceSession
        The autoencoder graph (outputs ``OUTPUTS``; input ``image``, N x 1 x H x W, sides
        multiples of 16).
    image : numpy.ndarray
        H x W image: scaled 0-1 (``images.normalise``), or of any dtype with ``scale``.
    layers : sequence of str
        Lens layers whose maps to keep (may be empty).
    window : int
        Largest window side, px (rounded down to a multiple of 16): bounds the memory of one run.
        Windows do not overlap, so activations near window edges see reflected context.
    max_side : int
        Largest side of the kept maps and the reconstruction, px.
    run_options : onnxruntime.RunOptions, optional
        Passed to every run (the deadline's terminate flag).
    embed_layers : sequence of str
        Layers whose per-channel moments make the embedding (the manifest's ``embedding.layers``).
    standardise : tuple of numpy.ndarray, optional
        Per-dimension mean and standard deviation of the training embeddings (the manifest's
        ``embedding.mean`` and ``embedding.std``), applied before the L2 normalisation.
    scale : tuple of float, optional
        (lo, hi) intensities mapped to 0-1 window by window (``images.prepare``); None: the image
        is already 0-1.

    Returns
    -------
    LensResult
        Per-layer maps and statistics, the reconstruction (0-1), the mean squared error per
        16 x 16 block, the total squared error and the embedding (the per-channel mean and standard
        deviation of each of ``embed_layers`` over the whole image, L2-normalised).
    """
    h, w = image.shape
    ph, pw = max(MULTIPLE, -(-h // MULTIPLE) * MULTIPLE), max(MULTIPLE, -(-w // MULTIPLE) * MULTIPLE)
    window = max(MULTIPLE, window - window % MULTIPLE)
    index = {o.name: i for i, o in enumerate(session.get_outputs())}
    keep: dict[str, LayerMaps | None] = {name: None for name in layers}
    moments: dict[str, tuple] = {}
    reconstruction = np.zeros(fit_side((h, w), max_side), np.float32)
    bh, bw = -(-h // BLOCK), -(-w // BLOCK)
    error_sums = np.zeros((bh, bw), np.float64)
    error_counts = np.zeros((bh, bw), np.float64)
    tiles = windows((ph, pw), window)
    for r0, c0, r1, c1 in tiles:
        vr, vc = min(r1, h) - r0, min(c1, w) - c0
        if vr <= 0 or vc <= 0:
            continue
        part = image[r0:r0 + vr, c0:c0 + vc]
        part = to_unit(part, scale) if scale is not None else part.astype(np.float32)
        x = _pad_window(part, r1 - r0, c1 - c0)[None, None]
        out = session.run(None, {"image": x}, run_options)
        rec = out[index["reconstruction"]][0, 0][:vr, :vc]
        _paste(reconstruction, rec, r0, c0, (h, w))
        sq = (rec - part) ** 2
        nb, mb = -(-vr // BLOCK), -(-vc // BLOCK)
        padded_sq = np.zeros((nb * BLOCK, mb * BLOCK), np.float64)
        padded_sq[:vr, :vc] = sq
        ones = np.zeros_like(padded_sq)
        ones[:vr, :vc] = 1
        br, bc = r0 // BLOCK, c0 // BLOCK
        error_sums[br:br + nb, bc:bc + mb] += padded_sq.reshape(nb, BLOCK, mb, BLOCK).sum(axis=(1, 3))
        error_counts[br:br + nb, bc:bc + mb] += ones.reshape(nb, BLOCK, mb, BLOCK).sum(axis=(1, 3))
        for name in set(layers) | set(embed_layers):
            s = STRIDES[name]
            valid = out[index[name]][0][:, :-(-vr // s), :-(-vc // s)]
            if name in embed_layers:
                sums = (valid.sum(axis=(1, 2), dtype=np.float64), (valid.astype(np.float64) ** 2).sum(axis=(1, 2)),
                        valid[0].size)
                m = moments.get(name)
                moments[name] = sums if m is None else (m[0] + sums[0], m[1] + sums[1], m[2] + sums[2])
            if name not in keep:
                continue
            full = (-(-h // s), -(-w // s))
            lay = keep[name]
            if lay is None:
                c = valid.shape[0]
                lay = keep[name] = LayerMaps(name, c, s, np.zeros((c, *fit_side(full, max_side)), np.float32),
                                             channel_sums=np.zeros(c, np.float64))
            lay.total += float(valid.sum(dtype=np.float64))
            lay.total_sq += float((valid.astype(np.float64) ** 2).sum())
            lay.zeros += int((valid <= 0).sum())
            lay.count += int(valid.size)
            lay.peak = max(lay.peak, float(valid.max()))
            lay.channel_sums += valid.sum(axis=(1, 2), dtype=np.float64)
            _paste(lay.maps, valid, r0 // s, c0 // s, full)
    raw = moments_vector(moments, embed_layers)
    return LensResult([keep[n] for n in layers], reconstruction,
                      (error_sums / np.maximum(error_counts, 1)).astype(np.float32), float(error_sums.sum()),
                      embedding_of(raw, standardise), raw, len(tiles))


def moments_vector(moments: dict[str, tuple], embed_layers=EMBED_LAYERS) -> np.ndarray:
    """Per-channel means and standard deviations of each layer over the image, concatenated.

    Parameters
    ----------
    moments : dict
        Per embedding layer: (sum, sum of squares, positions) per channel.
    embed_layers : sequence of str
        The layers, in order.

    Returns
    -------
    numpy.ndarray
        D float64 (D = twice the layers' channels).
    """
    parts = []
    for name in embed_layers:
        s1, s2, n = moments[name]
        mean = s1 / n
        parts += [mean, np.sqrt(np.maximum(s2 / n - mean ** 2, 0) + 1e-8)]
    return np.concatenate(parts)


def embedding_of(raw: np.ndarray, standardise=None) -> np.ndarray:
    """The served embedding of a moments vector.

    Parameters
    ----------
    raw : numpy.ndarray
        D moments (``moments_vector``).
    standardise : tuple of numpy.ndarray, optional
        (mean, std) per dimension: the moments are standardised with them first, so that cosine
        similarity weighs every dimension alike instead of the few largest.

    Returns
    -------
    numpy.ndarray
        D float32, standardised and L2-normalised.
    """
    emb = raw if standardise is None else (raw - standardise[0]) / standardise[1]
    return (emb / np.sqrt((emb ** 2).sum() + 1e-12)).astype(np.float32)
