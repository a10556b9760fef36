"""Preprocessing of vibrational spectra, vectorised over many spectra at once.

Every function takes an (N, C) array (N spectra of C channels) and returns float32. A Raman
map of 256 x 256 pixels is N = 65,536, so the steps are written as a few whole-array passes
and small matrix products, processed in row blocks that stay in the CPU cache.

Pipeline (``preprocess``): check input -> remove cosmic-ray spikes (on the native channels,
where a spike is 1-2 channels wide) -> resample onto the model axis -> subtract a polynomial
baseline -> keep the regions of interest. Intensity normalisation is *not* done here: it is
the first operation inside the ONNX graph, so that every consumer of a model normalises the
same way.

Units: wavenumbers (Raman shift) in cm^-1; intensities in whatever unit the instrument gave
(counts); they are never rescaled here.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
from numpy.polynomial import legendre

# Rows processed at once by the baseline iterations: 4096 x 128 float32 = 2 MiB per temporary.
_BLOCK_ROWS = 4096
# Channels the baseline iterations run on (see fit_baseline).
_BASELINE_BINS = 128
# 1.4826 * MAD estimates the standard deviation of normal noise.
_MAD_TO_SD = 1.4826


# ----------------------------------------------------------------------------- validation


def check_spectra(spectra: Any, name: str = "spectra") -> np.ndarray:
    """Validate spectra and return them as one C-contiguous float32 array.

    Parameters
    ----------
    spectra : array_like
        Numeric (N, C) array: N spectra of C channels.
    name : str, optional
        What the array is called in error messages.

    Returns
    -------
    numpy.ndarray
        float32 (N, C), C-contiguous (a copy only when needed).

    Raises
    ------
    ValueError
        Naming the problem: not numeric, not 2-D, empty, or NaN/Inf (with the first position).
    """
    arr = np.asarray(spectra)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_spectra, n_channels), got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} contain NaN or Inf ({int((~finite).sum())} values; first at spectrum {row}, "
            f"channel {col})"
        )
    return arr


def check_axis(axis: Any, n_channels: int | None = None, name: str = "axis") -> np.ndarray:
    """Validate a spectral axis.

    Parameters
    ----------
    axis : array_like
        Wavenumbers (cm^-1), at least 2, strictly increasing or strictly decreasing, finite.
    n_channels : int, optional
        If given, the number of channels of the spectra the axis belongs to.
    name : str, optional
        What the axis is called in error messages.

    Returns
    -------
    numpy.ndarray
        float64 (C,).

    Raises
    ------
    ValueError
        When the axis is not 1-D, too short, not finite, not monotonic or of the wrong length.
    """
    x = np.asarray(axis, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"{name} must be a 1-D array of at least 2 wavenumbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or Inf")
    step = np.diff(x)
    if not (np.all(step > 0) or np.all(step < 0)):
        raise ValueError(f"{name} must be strictly increasing or strictly decreasing")
    if n_channels is not None and x.size != n_channels:
        raise ValueError(f"{name} has {x.size} points but the spectra have {n_channels} channels")
    return x


# ----------------------------------------------------------------------------- resampling


def interpolation_plan(axis_from: np.ndarray, axis_to: np.ndarray,
                       min_overlap: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Indices and weights of a linear interpolation shared by every row.

    ``y[:, i] * (1 - w) + y[:, i + 1] * w`` is the linear interpolation of every row of ``y``
    (sampled on ``axis_from``) at ``axis_to``. ``axis_from`` may be decreasing (FTIR files often
    are). Target points outside the source range take the nearest edge value.

    Parameters
    ----------
    axis_from : numpy.ndarray
        Source axis (C,), cm^-1.
    axis_to : numpy.ndarray
        Target axis (M,), cm^-1.
    min_overlap : float, optional
        Fraction of the target span the source must cover.

    Returns
    -------
    i : numpy.ndarray
        intp (M,), left source column of each target point.
    w : numpy.ndarray
        float32 (M,), weight of the right neighbour.

    Raises
    ------
    ValueError
        When the source covers less than ``min_overlap`` of the target span (the spectra do not
        fit the model), or an axis is invalid.
    """
    xf = check_axis(axis_from, name="axis_from")
    xt = check_axis(axis_to, name="axis_to")
    lo_t, hi_t = float(xt.min()), float(xt.max())
    lo_f, hi_f = float(xf.min()), float(xf.max())
    covered = max(0.0, min(hi_t, hi_f) - max(lo_t, lo_f)) / (hi_t - lo_t)
    if covered < min_overlap:
        raise ValueError(
            f"spectral axis {lo_f:g}-{hi_f:g} covers only {100 * covered:.0f} % of the model axis "
            f"{lo_t:g}-{hi_t:g} (at least {100 * min_overlap:.0f} % needed)"
        )
    flip = xf[0] > xf[-1]
    xs = xf[::-1] if flip else xf
    i = np.clip(np.searchsorted(xs, xt, side="right") - 1, 0, xs.size - 2)
    w = np.clip((xt - xs[i]) / (xs[i + 1] - xs[i]), 0.0, 1.0)
    if flip:  # index into the original (decreasing) column order
        i = xs.size - 1 - i
        i, w = i - 1, 1.0 - w
    return i.astype(np.intp), w.astype(np.float32)


def resample(spectra: np.ndarray, axis_from: np.ndarray, axis_to: np.ndarray,
             min_overlap: float = 0.95) -> np.ndarray:
    """Linearly interpolate every spectrum onto another axis.

    One index/weight set serves all rows, so the cost is two gathers and a blend.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) spectra sampled on ``axis_from``.
    axis_from : numpy.ndarray
        (C,) axis of the spectra, cm^-1.
    axis_to : numpy.ndarray
        (M,) axis to resample onto, cm^-1.
    min_overlap : float, optional
        See ``interpolation_plan``.

    Returns
    -------
    numpy.ndarray
        float32 (N, M).

    Raises
    ------
    ValueError
        When the axes overlap too little or ``axis_from`` does not match the spectra.
    """
    y = check_spectra(spectra)
    xf = check_axis(axis_from, y.shape[1], name="axis_from")
    xt = check_axis(axis_to, name="axis_to")
    if xf.shape == xt.shape and np.array_equal(xf, xt):
        return y.copy()
    i, w = interpolation_plan(xf, xt, min_overlap)
    # np.take along columns is several times faster than fancy indexing y[:, i].
    out = np.take(y, i + 1, axis=1)
    out *= w
    out += np.take(y, i, axis=1) * (1.0 - w)
    return out


# ----------------------------------------------------------------------------- spikes


def noise_sd(spectra: np.ndarray, stride: int = 1) -> np.ndarray:
    """Robust per-spectrum noise standard deviation from first differences.

    The median absolute difference ignores peaks and spikes (few channels); dividing by sqrt(2)
    undoes the doubling of variance by differencing. A sloped baseline inflates it slightly, which
    only makes spike detection more conservative.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) spectra.
    stride : int, optional
        Use every stride-th difference (a cheaper, slightly less precise estimate for large maps).

    Returns
    -------
    numpy.ndarray
        (N,) standard deviations in the spectra's intensity unit.
    """
    d = np.abs(np.diff(spectra, axis=1)[:, ::stride])
    k = d.shape[1] // 2
    med = np.partition(d, k, axis=1)[:, k]
    return (_MAD_TO_SD / np.sqrt(2.0)) * med


def spike_mask(spectra: np.ndarray, threshold: float = 7.0, max_width: int = 2,
               narrowness: float = 0.3, noise_floor: float = 1e-3) -> np.ndarray:
    """Mask of cosmic-ray spike channels.

    Works on first differences, as Whitaker & Hayes (2018) do: a spike of ``w`` <= ``max_width``
    channels is a jump up followed ``w`` channels later by a jump down, both larger than
    ``threshold`` robust noise standard deviations of the differences (their modified z-score).
    On its own that test also fires on the flanks of strong real bands, so a second test keeps only
    steps that come out of nowhere: the differences just before the jump up and just after the jump
    down must both be smaller than ``narrowness`` times the jump. A real band spans several
    channels, so its flanks keep rising towards the top; a spike does not.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) spectra on their native channels.
    threshold : float, optional
        Jump size in robust noise standard deviations.
    max_width : int, optional
        Widest spike in channels (>= 1).
    narrowness : float, optional
        Largest neighbouring difference, as a fraction of the jump.
    noise_floor : float, optional
        Floor of the noise estimate as a fraction of each spectrum's range, so that smoothed,
        noise-free data do not turn every wiggle into a spike.

    Returns
    -------
    numpy.ndarray
        bool (N, C), True at spike channels.

    Raises
    ------
    ValueError
        When ``max_width`` < 1 or the spectra are invalid.
    """
    y = check_spectra(spectra)
    if max_width < 1:
        raise ValueError(f"max_width must be >= 1 channel, got {max_width}")
    n, c = y.shape
    mask = np.zeros((n, c), dtype=bool)
    if c < max_width + 3:
        return mask
    d = np.subtract(y[:, 1:], y[:, :-1])
    stride = 4 if c >= 512 else 1
    sd = np.maximum(noise_sd(y, stride) * np.sqrt(2.0), noise_floor * (y.max(axis=1) - y.min(axis=1)))
    limit = threshold * np.maximum(sd, np.finfo(np.float32).tiny)
    # Candidate jumps up are few (spikes and the flanks of strong bands): test only those.
    above = d > limit[:, None]
    some = np.flatnonzero(above.any(axis=1))
    rows, cols = np.divmod(np.flatnonzero(above[some]), c - 1)
    rows = some[rows]
    lim = limit[rows]
    up = d[rows, cols]
    before = np.where(cols >= 1, np.abs(d[rows, np.maximum(cols - 1, 0)]), 0.0)
    found = np.zeros(rows.size, dtype=bool)
    for w in range(1, max_width + 1):
        k = cols + w  # index of the jump down after a group of w channels
        valid = (k < c - 1) & ~found
        kk = np.minimum(k, c - 2)
        down = -d[rows, kk]
        after = np.where(kk + 1 < c - 1, np.abs(d[rows, np.minimum(kk + 1, c - 2)]), 0.0)
        jump = np.minimum(up, down)
        hit = valid & (down > lim) & (np.maximum(before, after) < narrowness * jump)
        for offset in range(1, w + 1):
            mask[rows[hit], cols[hit] + offset] = True
        found |= hit
    return mask


def remove_spikes(spectra: np.ndarray, threshold: float = 7.0, max_width: int = 2) -> np.ndarray:
    """Replace cosmic-ray spike channels by linear interpolation across them.

    The nearest non-spike channels on either side are joined (a local mean would be biased on the
    steep flank of a band); rows without spikes are unchanged.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) spectra on their native channels.
    threshold, max_width
        See ``spike_mask``.

    Returns
    -------
    numpy.ndarray
        float32 (N, C).
    """
    y = check_spectra(spectra)
    mask = spike_mask(y, threshold=threshold, max_width=max_width)
    out = y.copy()
    channels = np.arange(y.shape[1])
    # Spikes hit a few percent of the spectra: a loop over those rows is cheap.
    for row in np.flatnonzero(mask.any(axis=1)):
        bad = mask[row]
        out[row, bad] = np.interp(channels[bad], channels[~bad], y[row, ~bad])
    return out


# ----------------------------------------------------------------------------- baseline


def polynomial_basis(axis: np.ndarray, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """Legendre design matrix of a polynomial baseline and its pseudo-inverse.

    Legendre polynomials on the axis scaled to [-1, 1], rather than monomials, keep the
    least-squares problem well conditioned at degree 5-10.

    Parameters
    ----------
    axis : numpy.ndarray
        (C,) axis, cm^-1.
    degree : int
        Polynomial degree, 0 to C - 1.

    Returns
    -------
    v : numpy.ndarray
        float32 (C, degree + 1) Vandermonde matrix.
    p : numpy.ndarray
        float32 (degree + 1, C) pseudo-inverse of ``v``.

    Raises
    ------
    ValueError
        When ``degree`` is out of range.
    """
    x = check_axis(axis)
    if degree < 0 or degree >= x.size:
        raise ValueError(f"baseline degree must be in 0..{x.size - 1}, got {degree}")
    t = 2.0 * (x - x.min()) / (x.max() - x.min()) - 1.0
    v = legendre.legvander(t, degree)
    return v.astype(np.float32), np.linalg.pinv(v).astype(np.float32)


def _bin_means(a: np.ndarray, width: int) -> np.ndarray:
    """Means over consecutive groups of ``width`` columns (trailing remainder dropped).

    Summing ``width`` strided slices is several times faster than ``reshape(...).mean(-1)``,
    whose reduction runs over a tiny contiguous axis."""
    m = a.shape[-1] // width
    total = a[..., 0 : m * width : width].astype(np.float32)
    for k in range(1, width):
        total += a[..., k : m * width : width]
    total *= np.float32(1.0 / width)
    return total


def fit_baseline(spectra: np.ndarray, axis: np.ndarray, degree: int = 5,
                 iterations: int = 20) -> np.ndarray:
    """Polynomial baseline under every spectrum by IModPoly, as batched least squares.

    The improved modified polynomial method (Zhao et al., Appl. Spectrosc. 2007): each iteration
    fits a polynomial to every row with one shared pseudo-inverse (two small matrix products for
    all rows), then clips each row to ``fit + sd(residual)`` so that peaks sink towards the baseline
    while noise (within one sd) keeps the fit centred in it. Two shortcuts keep a 65,536 x 1024 map
    near a second: the iterations run on means of consecutive channels (about ``_BASELINE_BINS`` of
    them; a degree-5 baseline has no detail at that scale and binning only lowers the noise), and
    IModPoly's removal of peak channels before the first fit is left out (it would give every row
    its own least-squares problem). The final polynomial is evaluated on the full axis. A fixed
    number of iterations makes the result independent of how rows are batched.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) spectra.
    axis : numpy.ndarray
        (C,) axis, cm^-1.
    degree : int, optional
        Polynomial degree.
    iterations : int, optional
        Clipping iterations (>= 1).

    Returns
    -------
    numpy.ndarray
        float32 (N, C) baselines.

    Raises
    ------
    ValueError
        On invalid spectra or axis, ``iterations`` < 1, or a degree too high for the channels.
    """
    y = check_spectra(spectra)
    x = check_axis(axis, y.shape[1])
    if iterations < 1:
        raise ValueError(f"baseline iterations must be >= 1, got {iterations}")
    width, pt, vbt, v_full_t = _baseline_operators(np.ascontiguousarray(x, dtype=np.float64).tobytes(), degree)
    coef = np.empty((y.shape[0], degree + 1), dtype=np.float32)
    inv_m = np.float32(1.0 / vbt.shape[1])  # number of bins
    for start in range(0, y.shape[0], _BLOCK_ROWS):
        work = _bin_means(y[start:start + _BLOCK_ROWS], width)
        for _ in range(iterations):
            fit = (work @ pt) @ vbt
            resid = work - fit
            # The constant term makes least-squares residuals zero-mean: sd = rms.
            fit += np.sqrt(np.einsum("ij,ij->i", resid, resid) * inv_m)[:, None]
            np.minimum(work, fit, out=work)
        coef[start:start + _BLOCK_ROWS] = work @ pt
    return coef @ v_full_t


@functools.lru_cache(maxsize=32)
def _baseline_operators(axis_bytes: bytes, degree: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Bin width and the least-squares operators for one axis and degree. Cached: two
    pseudo-inverses (SVDs) per call were most of the cost of preprocessing a single spectrum."""
    x = np.frombuffer(axis_bytes, dtype=np.float64)
    width = max(1, x.size // _BASELINE_BINS)
    xb = _bin_means(x, width)
    v_full, _ = polynomial_basis(x, degree)
    # Same scaling of the axis for binned and full grids, so coefficients carry over.
    t = 2.0 * (xb - x.min()) / (x.max() - x.min()) - 1.0
    vb = legendre.legvander(t, degree)
    if vb.shape[0] <= degree:
        raise ValueError(f"baseline degree {degree} is too high for {x.size} channels")
    operators = (np.ascontiguousarray(np.linalg.pinv(vb).T.astype(np.float32)),
                 np.ascontiguousarray(vb.T.astype(np.float32)), np.ascontiguousarray(v_full.T))
    for array in operators:
        array.setflags(write=False)
    return (width, *operators)


def baseline_correct(spectra: np.ndarray, axis: np.ndarray, degree: int = 5,
                     iterations: int = 20) -> np.ndarray:
    """Spectra minus their IModPoly baseline.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) spectra.
    axis : numpy.ndarray
        (C,) axis, cm^-1.
    degree, iterations
        See ``fit_baseline``.

    Returns
    -------
    numpy.ndarray
        float32 (N, C), ``spectra - fit_baseline(spectra, axis, degree, iterations)``.
    """
    y = check_spectra(spectra)
    return y - fit_baseline(y, axis, degree, iterations)


# ----------------------------------------------------------------------------- quality


def degenerate_mask(processed: np.ndarray, min_snr: float = 5.0) -> np.ndarray:
    """Spectra that carry no usable signal.

    Such spectra (empty map pixels, saturated or dead detector rows) are dropped before training,
    as in Gravely & Roxbury (2021).

    Parameters
    ----------
    processed : numpy.ndarray
        (N, C) preprocessed, baseline-corrected spectra.
    min_snr : float, optional
        A spectrum whose highest point is below ``min_snr`` noise standard deviations is degenerate.

    Returns
    -------
    numpy.ndarray
        bool (N,), True for constant spectra and those below ``min_snr``.
    """
    y = check_spectra(processed, name="processed")
    span = y.max(axis=1) - y.min(axis=1)
    if y.shape[1] < 3:
        return span <= 0
    return (span <= 0) | (y.max(axis=1) < min_snr * noise_sd(y))


# ----------------------------------------------------------------------------- pipeline

# Regions of interest of DNA-SWCNT Raman spectra (cm^-1): radial breathing modes; D, G-, G+
# (with the cellular amide/CH2 bands around them); G'. The rest of the axis holds mostly
# fluorescence background and noise.
SWCNT_REGIONS_CM1: tuple[tuple[float, float], ...] = ((120.0, 350.0), (1200.0, 1750.0), (2500.0, 2850.0))


@dataclass(frozen=True)
class PreprocessParams:
    """Everything needed to turn raw spectra into model inputs; stored in the model manifest.

    The model axis is ``axis_values`` if given, else ``axis_num`` points from ``axis_start`` to
    ``axis_stop`` (cm^-1, inclusive). ``regions`` lists (low, high) cm^-1 windows that are kept
    after baseline correction (empty: keep all); the model input has ``n_features`` columns
    at ``output_axis()``.
    """

    axis_start: float = 100.0
    axis_stop: float = 3000.0
    axis_num: int = 1024
    axis_values: tuple[float, ...] | None = None
    regions: tuple[tuple[float, float], ...] = ()
    min_overlap: float = 0.95
    despike: bool = True
    spike_threshold: float = 7.0
    spike_max_width: int = 2
    baseline: bool = True
    baseline_degree: int = 5
    baseline_iterations: int = 20
    min_snr: float = 0.0

    def __post_init__(self) -> None:
        if self.axis_values is not None:
            object.__setattr__(self, "axis_values", tuple(float(v) for v in self.axis_values))
            check_axis(self.axis_values, name="axis_values")
        elif not (self.axis_num >= 2 and self.axis_stop > self.axis_start):
            raise ValueError("model axis needs axis_num >= 2 and axis_stop > axis_start")
        regions = tuple((float(lo), float(hi)) for lo, hi in self.regions)
        object.__setattr__(self, "regions", regions)
        for lo, hi in regions:
            if not hi > lo:
                raise ValueError(f"region ({lo}, {hi}) must have high > low")
        if self.n_features < 2:
            raise ValueError("regions keep fewer than 2 points of the model axis")
        if not 0.0 < self.min_overlap <= 1.0:
            raise ValueError(f"min_overlap must be in (0, 1], got {self.min_overlap}")
        if self.spike_max_width < 1 or self.baseline_iterations < 1 or self.baseline_degree < 0:
            raise ValueError("spike_max_width and baseline_iterations must be >= 1, degree >= 0")

    def model_axis(self) -> np.ndarray:
        """The axis (cm^-1, float64) onto which spectra are resampled."""
        if self.axis_values is not None:
            return np.asarray(self.axis_values, dtype=np.float64)
        return np.linspace(self.axis_start, self.axis_stop, self.axis_num)

    def region_mask(self) -> np.ndarray:
        """Boolean mask over ``model_axis()`` of the channels kept as model input."""
        x = self.model_axis()
        if not self.regions:
            return np.ones(x.size, dtype=bool)
        keep = np.zeros(x.size, dtype=bool)
        for lo, hi in self.regions:
            keep |= (x >= lo) & (x <= hi)
        return keep

    def output_axis(self) -> np.ndarray:
        """Wavenumbers (cm^-1) of the model-input columns."""
        return self.model_axis()[self.region_mask()]

    @property
    def n_features(self) -> int:
        """Number of model-input columns."""
        return int(self.region_mask().sum())

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (tuples become lists)."""
        d = asdict(self)
        d["axis_values"] = None if self.axis_values is None else list(self.axis_values)
        d["regions"] = [list(r) for r in self.regions]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessParams:
        """Inverse of ``to_dict``; unknown keys raise ValueError, missing keys take defaults."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown preprocessing parameters: {', '.join(unknown)}")
        d = dict(data)
        if d.get("axis_values") is not None:
            d["axis_values"] = tuple(d["axis_values"])
        if "regions" in d:
            d["regions"] = tuple(tuple(r) for r in d["regions"])
        return cls(**d)


def preprocess(spectra: np.ndarray, axis: np.ndarray, params: PreprocessParams) -> np.ndarray:
    """Raw spectra to model inputs.

    Steps: spike removal on the native channels (a spike is 1-2 of them wide), resampling onto the
    model axis, IModPoly baseline subtraction, region-of-interest selection.

    Parameters
    ----------
    spectra : numpy.ndarray
        (N, C) raw spectra.
    axis : numpy.ndarray
        (C,) their axis, cm^-1.
    params : PreprocessParams
        The steps' parameters, as stored in the model manifest.

    Returns
    -------
    numpy.ndarray
        float32 (N, params.n_features).

    Raises
    ------
    ValueError
        On bad shapes, NaN/Inf, empty input or an axis that does not match.
    """
    y = check_spectra(spectra)
    x = check_axis(axis, y.shape[1])
    if params.despike:
        y = remove_spikes(y, threshold=params.spike_threshold, max_width=params.spike_max_width)
    model_axis = params.model_axis()
    y = resample(y, x, model_axis, params.min_overlap)
    if params.baseline:
        y = baseline_correct(y, model_axis, params.baseline_degree, params.baseline_iterations)
    keep = params.region_mask()
    if not keep.all():
        y = np.ascontiguousarray(y[:, keep])
    return y
