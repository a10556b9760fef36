"""Seeded generator of synthetic Raman spectra of DNA-wrapped single-walled carbon nanotubes.

No measured DNA-SWCNT spectra are available to the project, so the nanotube-specific logic
(radial breathing modes, D, G-/G+, G') is exercised with spectra from this generator. It mimics
the experiment of Gravely & Roxbury (ACS Nano 2021): DNA-SWCNTs taken up by cells are imaged by
Raman mapping and each spectrum is labelled by the endosomal compartment that holds the tubes
(early endosome, late endosome, lysosome). As endosomes mature the lumen acidifies (pH ~6.5 to
~4.5) and the environment of the tube changes; the paper reports that this moves and broadens
bands and changes intensity ratios. Here these effects are modelled as small class-dependent
changes (see ``CLASS_EFFECTS``) that are deliberately smaller than the spectrum-to-spectrum
biological variability, so that a classifier has to combine several weak cues.

Model of one spectrum (all wavenumbers in cm^-1, intensities in detector counts)::

    counts = scale * [ sum_b  A_b * L(x; c_b + jitter, g_b) ]      nanotube bands
           + cell * cell_bands(x)                                     cellular Raman background
           + sum_j w_j * B_j(x)                                       fluorescence background
           + offset                                                   detector dark level
    observed = counts + sqrt(counts) * N(0, 1) + N(0, read_noise)    shot + read noise
             (+ a cosmic-ray spike of 1-2 channels in a few spectra)

``L`` is a Lorentzian with half width at half maximum ``g``, truncated smoothly (shifted to reach
zero) at ``TRUNCATE_HWHM`` half widths so that it can be evaluated only near its centre: this
is what makes a 256 x 256 x 1024 map cost a few seconds. Shot noise uses the normal
approximation of the Poisson distribution, which is accurate at the count levels used here
(hundreds of counts and more).

Bands:

* RBM: one band per chirality (n, m) in ``CHIRALITIES`` at ``223.5 / d + 12.5`` cm^-1, with d the
  tube diameter in nm (Bachilo et al., Science 2002 relation for surfactant/DNA-dispersed
  tubes); relative abundances vary per spectrum (Dirichlet).
* D ~1350 (disorder), G- ~1570, G+ ~1591 (tangential modes), G' ~2680 (2D overtone).

All randomness comes from ``numpy.random.default_rng(seed)``: the same seed gives bit-identical
spectra on the same platform.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

CLASSES: tuple[str, ...] = ("early_endosome", "late_endosome", "lysosome")

AXIS_START_CM1 = 100.0
AXIS_STOP_CM1 = 3000.0
AXIS_POINTS = 1024

# Graphene lattice constant in nm, for tube diameters: sqrt(3) * a_CC with a_CC = 0.144 nm, the
# convention under which the RBM relation below was fitted (gives d(7,5) = 0.829 nm).
GRAPHENE_A_NM = float(np.sqrt(3.0) * 0.144)
# (n, m) chiralities whose RBMs span ~150-300 cm^-1 (HiPco-like mixture, resonant at 785 nm or so).
CHIRALITIES: tuple[tuple[int, int], ...] = (
    (7, 5), (7, 6), (9, 4), (8, 6), (8, 7), (9, 7), (11, 7), (13, 7), (16, 5), (17, 6),
)
# Natural RBM widths are ~4-8 cm^-1 FWHM; with the inhomogeneous broadening in cells and the
# ~6-8 cm^-1 resolution of a spectrometer sampled every 2.8 cm^-1, ~12 cm^-1 FWHM is observed.
RBM_HWHM_CM1 = 6.0
TRUNCATE_HWHM = 15.0
# Rows rendered at once: bounds the temporary memory and keeps the work in cache. Fixed, so
# that the random stream (and therefore the output) does not depend on the problem size.
_CHUNK_ROWS = 2048


@dataclass(frozen=True)
class ClassEffect:
    """Mean spectral signature of one endosomal class.

    Shifts are in cm^-1 from the nominal band centres (positive = to higher wavenumber);
    ``g_width`` multiplies the nominal G half widths; ratios are peak-height ratios;
    ``rbm_quench`` is the fractional RBM loss of the largest-diameter tubes.
    """

    g_plus_shift: float       # p-doping by the acidic lumen stiffens the G+ mode
    g_minus_shift: float
    g_width: float            # G-/G+ broadening (inhomogeneous environment)
    d_to_g: float             # mean D/G+ peak height ratio (defects, DNA desorption)
    g_prime_shift: float      # doping softens the G' overtone
    g_prime_to_g: float       # G'/G+ height ratio
    rbm_shift: float          # stiffer environment pushes the RBMs up
    rbm_quench: float         # fractional loss of RBM intensity for the largest-diameter tubes


def _maturation(k: float) -> ClassEffect:
    """Class effect after ``k`` maturation steps (0 early endosome, 1 late, 2 lysosome): shifts
    grow linearly, ratios geometrically."""
    return ClassEffect(
        g_plus_shift=2.0 * k, g_minus_shift=1.0 * k, g_width=1.0 + 0.12 * k,
        d_to_g=0.06 * float(np.exp(0.28 * k)), g_prime_shift=-3.0 * k,
        g_prime_to_g=0.5 * float(np.exp(-0.16 * k)), rbm_shift=1.0 * k, rbm_quench=0.2 * k,
    )


CLASS_EFFECTS: dict[str, ClassEffect] = {name: _maturation(k) for k, name in enumerate(CLASSES)}


@dataclass(frozen=True)
class Nuisance:
    """Spectrum-to-spectrum variability that carries no class information (units in names)."""

    jitter_sd_cm1: float = 0.7           # calibration drift: shifts every band together
    g_plus_shift_sd_cm1: float = 1.0     # biological variability of each class effect
    g_minus_shift_sd_cm1: float = 1.5
    g_prime_shift_sd_cm1: float = 2.0
    rbm_shift_sd_cm1: float = 0.6
    width_sd: float = 0.06               # relative
    ratio_sd: float = 0.2                # log-normal sd of D/G and G'/G
    rbm_quench_sd: float = 0.1
    rbm_to_g: float = 0.35               # mean total RBM height relative to G+
    rbm_dirichlet: float = 8.0           # concentration of chirality abundances
    g_counts: float = 10000.0            # median G+ peak height in counts (resonant Raman)
    g_counts_log_sd: float = 0.5
    background_to_g: float = 0.5         # median fluorescence level relative to G+
    background_log_sd: float = 0.7
    cell_to_g: float = 0.08              # median height of the cellular Raman bands
    offset_counts: float = 100.0
    read_noise_counts: float = 6.0
    spike_probability: float = 0.05
    spike_counts: tuple[float, float] = (2000.0, 20000.0)


NUISANCE = Nuisance()


@dataclass(frozen=True)
class SyntheticSpectra:
    """A labelled synthetic set: ``spectra`` (N, C) float32 counts, ``labels`` (N,) int64 indices
    into ``class_names``, ``axis`` (C,) float64 Raman shift in cm^-1."""

    spectra: np.ndarray
    labels: np.ndarray
    axis: np.ndarray
    class_names: tuple[str, ...] = CLASSES


def default_axis() -> np.ndarray:
    """The generator's Raman-shift axis: 1024 points from 100 to 3000 cm^-1 (float64)."""
    return np.linspace(AXIS_START_CM1, AXIS_STOP_CM1, AXIS_POINTS)


def tube_diameter_nm(n: int, m: int) -> float:
    """Diameter in nm of an (n, m) single-walled carbon nanotube."""
    return GRAPHENE_A_NM / np.pi * np.sqrt(n * n + n * m + m * m)


def rbm_position_cm1(n: int, m: int) -> float:
    """Radial breathing mode position in cm^-1 of a dispersed (n, m) tube: 223.5 / d + 12.5."""
    return 223.5 / tube_diameter_nm(n, m) + 12.5


# Nominal band centres (cm^-1) and half widths (cm^-1) of the early-endosome class.
BAND_CENTRES_CM1 = {"D": 1350.0, "G-": 1570.0, "G+": 1591.0, "G'": 2680.0}
BAND_HWHM_CM1 = {"D": 22.0, "G-": 12.0, "G+": 7.0, "G'": 30.0}
G_MINUS_TO_G_PLUS = 0.35
# Cellular Raman bands (phenylalanine, amide III, CH2 bend, amide I, CH stretch): centre,
# half width, relative height. Class independent: they are a nuisance the model must ignore.
CELL_BANDS = ((1003.0, 5.0, 0.5), (1260.0, 40.0, 0.4), (1450.0, 25.0, 0.6), (1655.0, 30.0, 0.7),
              (2935.0, 45.0, 1.0))


def _validate_axis(axis: np.ndarray | None) -> np.ndarray:
    x = default_axis() if axis is None else np.asarray(axis, dtype=np.float64)
    if x.ndim != 1 or x.size < 2:
        raise ValueError(f"axis must be a 1-D array of at least 2 wavenumbers, got shape {x.shape}")
    if not np.all(np.isfinite(x)) or not np.all(np.diff(x) > 0):
        raise ValueError("axis must be finite and strictly increasing (cm^-1)")
    return x


def _background_basis(x: np.ndarray) -> np.ndarray:
    """Non-negative broad shapes (B, C) whose positive combinations mimic cell autofluorescence
    and nanotube photoluminescence tails: slopes, curvature, decays and broad humps."""
    t = (x - x[0]) / (x[-1] - x[0])
    rows = [
        np.ones_like(t), t, 1.0 - t, t**2, (1.0 - t) ** 2,
        np.exp(-t / 0.15), np.exp(-t / 0.4),
        np.exp(-0.5 * ((t - 0.45) / 0.25) ** 2), np.exp(-0.5 * ((t - 0.8) / 0.2) ** 2),
    ]
    return np.stack(rows).astype(np.float32)


def _cell_spectrum(x: np.ndarray) -> np.ndarray:
    """Fixed cellular Raman contribution (C,), peak height 1."""
    y = np.zeros_like(x)
    for centre, hwhm, height in CELL_BANDS:
        y += height / (1.0 + ((x - centre) / hwhm) ** 2)
    return (y / y.max()).astype(np.float32)


def _add_lorentzians(out: np.ndarray, x: np.ndarray, centre: np.ndarray, hwhm: np.ndarray,
                     height: np.ndarray) -> None:
    """Add one truncated Lorentzian per row of ``out`` (rows, C) in place.

    ``centre``/``hwhm`` in cm^-1 and ``height`` in counts are per-row vectors. The band is
    evaluated only within ``TRUNCATE_HWHM`` half widths of its centre and shifted down so that
    it reaches zero there (continuous, no step); the missing tail is < 0.5 % of the height.
    """
    reach = TRUNCATE_HWHM * hwhm
    lo = int(np.searchsorted(x, float(np.min(centre - reach)), side="left"))
    hi = int(np.searchsorted(x, float(np.max(centre + reach)), side="right"))
    if hi <= lo:
        return
    xs = x[lo:hi].astype(np.float32)
    u = (xs[None, :] - centre[:, None].astype(np.float32)) / hwhm[:, None].astype(np.float32)
    edge = np.float32(1.0 / (1.0 + TRUNCATE_HWHM**2))
    prof = 1.0 / (1.0 + u * u)
    prof -= edge
    np.maximum(prof, 0.0, out=prof)
    prof *= (height / (1.0 - edge)).astype(np.float32)[:, None]
    out[:, lo:hi] += prof


def _draw_parameters(labels: np.ndarray, rng: np.random.Generator, amplitude: np.ndarray | None,
                     nz: Nuisance) -> dict[str, np.ndarray]:
    """Per-spectrum parameters (all shape (N,) or (N, k)), drawn up front in a fixed order."""
    n = labels.size
    eff = [CLASS_EFFECTS[c] for c in CLASSES]

    def by_class(field: str) -> np.ndarray:
        return np.array([getattr(e, field) for e in eff])[labels]

    lognorm = lambda sd: np.exp(rng.normal(0.0, sd, n) - 0.5 * sd * sd)  # noqa: E731  (mean 1)
    p: dict[str, np.ndarray] = {}
    p["jitter"] = rng.normal(0.0, nz.jitter_sd_cm1, n)
    p["g_height"] = nz.g_counts * np.exp(rng.normal(0.0, nz.g_counts_log_sd, n))
    if amplitude is not None:
        p["g_height"] = p["g_height"] * amplitude
    width = by_class("g_width") * (1.0 + rng.normal(0.0, nz.width_sd, n))
    p["g_plus_centre"] = BAND_CENTRES_CM1["G+"] + by_class("g_plus_shift") + rng.normal(
        0.0, nz.g_plus_shift_sd_cm1, n)
    p["g_minus_centre"] = BAND_CENTRES_CM1["G-"] + by_class("g_minus_shift") + rng.normal(
        0.0, nz.g_minus_shift_sd_cm1, n)
    p["g_plus_hwhm"] = BAND_HWHM_CM1["G+"] * width
    p["g_minus_hwhm"] = BAND_HWHM_CM1["G-"] * width
    p["g_minus_height"] = G_MINUS_TO_G_PLUS * lognorm(nz.ratio_sd / 2)
    p["d_height"] = by_class("d_to_g") * lognorm(nz.ratio_sd)
    p["d_hwhm"] = BAND_HWHM_CM1["D"] * (1.0 + rng.normal(0.0, nz.width_sd, n))
    p["gp_centre"] = BAND_CENTRES_CM1["G'"] + by_class("g_prime_shift") + rng.normal(
        0.0, nz.g_prime_shift_sd_cm1, n)
    p["gp_height"] = by_class("g_prime_to_g") * lognorm(nz.ratio_sd)
    p["gp_hwhm"] = BAND_HWHM_CM1["G'"] * (1.0 + rng.normal(0.0, nz.width_sd, n))
    p["rbm_shift"] = by_class("rbm_shift") + rng.normal(0.0, nz.rbm_shift_sd_cm1, n)
    abundance = rng.dirichlet(np.full(len(CHIRALITIES), nz.rbm_dirichlet), n)
    # Larger tubes have smaller band gaps and are quenched first by p-doping: weight 0..1 by d.
    d = np.array([tube_diameter_nm(*nm) for nm in CHIRALITIES])
    susceptibility = (d - d.min()) / (d.max() - d.min())
    quench = np.clip(by_class("rbm_quench") + rng.normal(0.0, nz.rbm_quench_sd, n), 0.0, 0.9)
    p["rbm_heights"] = (nz.rbm_to_g * len(CHIRALITIES) / 2.0) * abundance * (
        1.0 - quench[:, None] * susceptibility[None, :])
    p["rbm_hwhm"] = RBM_HWHM_CM1 * (1.0 + rng.normal(0.0, nz.width_sd, n))
    p["cell"] = nz.cell_to_g * np.exp(rng.normal(0.0, 0.6, n))
    level = nz.background_to_g * np.exp(rng.normal(0.0, nz.background_log_sd, n))
    shares = rng.dirichlet(np.full(9, 0.7), n)
    p["background"] = shares * level[:, None] * 2.0  # basis shapes average ~0.5 over the axis
    has_spike = rng.random(n) < nz.spike_probability
    p["spike_row"] = np.flatnonzero(has_spike)
    p["spike_pos"] = rng.random(p["spike_row"].size)
    p["spike_width"] = rng.integers(1, 3, p["spike_row"].size)
    p["spike_counts"] = rng.uniform(*nz.spike_counts, p["spike_row"].size)
    return p


def _render(labels: np.ndarray, rng: np.random.Generator, x: np.ndarray,
            amplitude: np.ndarray | None = None, nz: Nuisance = NUISANCE) -> np.ndarray:
    """Spectra (N, C) float32 in counts for class indices ``labels``."""
    n, c = labels.size, x.size
    p = _draw_parameters(labels, rng, amplitude, nz)
    rbm_nominal = np.array([rbm_position_cm1(*nm) for nm in CHIRALITIES])
    basis = _background_basis(x)
    cell = _cell_spectrum(x)
    out = np.empty((n, c), dtype=np.float32)
    for start in range(0, n, _CHUNK_ROWS):
        sl = slice(start, min(start + _CHUNK_ROWS, n))
        g = p["g_height"][sl]
        jit = p["jitter"][sl]
        # Everything relative to G+ height first, in counts at the end (one multiply).
        block = (p["background"][sl] @ basis.astype(np.float64)).astype(np.float32)
        block += (p["cell"][sl].astype(np.float32))[:, None] * cell[None, :]
        _add_lorentzians(block, x, p["g_plus_centre"][sl] + jit, p["g_plus_hwhm"][sl], np.ones_like(g))
        _add_lorentzians(block, x, p["g_minus_centre"][sl] + jit, p["g_minus_hwhm"][sl],
                         p["g_minus_height"][sl])
        _add_lorentzians(block, x, BAND_CENTRES_CM1["D"] + jit, p["d_hwhm"][sl], p["d_height"][sl])
        _add_lorentzians(block, x, p["gp_centre"][sl] + jit, p["gp_hwhm"][sl], p["gp_height"][sl])
        for k, centre in enumerate(rbm_nominal):
            _add_lorentzians(block, x, centre + p["rbm_shift"][sl] + jit, p["rbm_hwhm"][sl],
                             p["rbm_heights"][sl, k])
        block *= g.astype(np.float32)[:, None]
        block += np.float32(nz.offset_counts)
        # Shot noise (normal approximation of Poisson) and detector read noise, in one draw.
        sd = np.sqrt(block + np.float32(nz.read_noise_counts**2))
        block += sd * rng.standard_normal(block.shape, dtype=np.float32)
        out[sl] = block
    _add_spikes(out, p)
    return out


def _add_spikes(out: np.ndarray, p: dict[str, np.ndarray]) -> None:
    """Cosmic-ray hits: 1-2 adjacent channels raised by thousands of counts."""
    c = out.shape[1]
    for row, pos, width, counts in zip(p["spike_row"], p["spike_pos"], p["spike_width"],
                                       p["spike_counts"], strict=True):
        j = int(pos * (c - 2))
        out[row, j:j + int(width)] += np.float32(counts)


def generate_spectra(n_per_class: int, seed: int, axis: np.ndarray | None = None,
                     nuisance: Nuisance = NUISANCE) -> SyntheticSpectra:
    """``n_per_class`` spectra of each class in ``CLASSES``, in shuffled order.

    ``axis`` is the Raman-shift axis in cm^-1 (default ``default_axis()``). Deterministic in
    ``seed``. ``nuisance`` changes the variability; the random stream does not depend on its
    values, so e.g. ``spike_counts=(0, 0)`` gives the same spectra without cosmic rays (ground
    truth for spike removal).
    """
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1, got {n_per_class}")
    x = _validate_axis(axis)
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(CLASSES), dtype=np.int64), n_per_class))
    spectra = _render(labels, rng, x, nz=nuisance)
    return SyntheticSpectra(spectra=spectra, labels=labels, axis=x, class_names=CLASSES)


def _blob_labels(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Spatially coherent class regions: argmax of one smoothed noise field per class."""
    sigma = max(height, width) / 16.0
    fields = rng.standard_normal((len(CLASSES), height, width)).astype(np.float32)
    for k in range(len(CLASSES)):
        fields[k] = ndimage.gaussian_filter(fields[k], sigma, mode="wrap")
    return np.argmax(fields, axis=0).astype(np.int64)


def generate_map(height: int, width: int, seed: int, axis: np.ndarray | None = None,
                 nuisance: Nuisance = NUISANCE) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic Raman map: ``(cube (H, W, C) float32 counts, label_map (H, W) int64)``.

    Classes form blobs about ``max(H, W) / 8`` pixels across; the nanotube amount (signal level)
    also varies smoothly across the map, as it does over a cell. Deterministic in ``seed``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"map size must be positive, got {height} x {width}")
    x = _validate_axis(axis)
    rng = np.random.default_rng(seed)
    label_map = _blob_labels(height, width, rng)
    amount = ndimage.gaussian_filter(rng.standard_normal((height, width)),
                                     max(height, width) / 10.0, mode="wrap")
    amount = np.exp(0.5 * amount / (amount.std() + 1e-12))
    cube = _render(label_map.ravel(), rng, x, amplitude=amount.ravel(), nz=nuisance)
    return cube.reshape(height, width, x.size), label_map
