"""Figures comparing synthetic and real TEM images.

``python -m nanolens_tem.evaluation.figures --out DIR`` writes to DIR (keep it outside the repository or in
an ignored folder such as ``demo-output/``, since it shows real data):

- ``tem_synthetic_vs_real.png``: a real carbon-black crop beside a synthetic image of the same
  size, with their grey-level histograms;
- ``tem_synthetic_example.png``: the synthetic half only (safe to commit, it is what
  ``docs/images/tem_synthetic_example.png`` is made from);
- ``tem_synthetic_vs_real_statistics.png``: the synthetic image beside statistics of all real
  images (grey-level histogram, radially averaged power spectrum) and no real pixel, so it can go
  into the repository's docs, which the real images may not;
- ``tem_faceted_vs_gold_statistics.png``: the same for the faceted-crystal generator against the
  real gold tetrahedra and nanoprisms;
- with ``--overlays``: every method's outlines on a synthetic agglomerate image and a synthetic
  faceted-crystal image (``tem_overlays_synthetic.png``, ``tem_overlays_faceted.png``, safe to
  commit) and on the six carbon-black images (``tem_overlays_carbonblack_K.png``, real data).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from nanolens_tem.synthetic.agglomerates import SynthParams, generate
from nanolens_tem.synthetic.faceted import FacetedParams, generate_faceted

#: parameters matched by eye and by histogram to the carbon-black test images (primary
#: particles about 35-45 px at the images' native resolution)
CARBON_BLACK_LIKE = SynthParams(
    shape=(768, 768), gmd=36.0, gsd=1.25, particles_per_agglomerate=(30, 160), coverage=0.22,
    max_agglomerates=3, absorption=0.32, overlap_range=(0.05, 0.3), film_texture=0.05,
    dose=250.0, scale_bar=True,
)


#: faceted crystals like the gold tetrahedra images (512 px, crystals about 60-75 px across)
GOLD_LIKE = FacetedParams(shape=(512, 512), gmd=(55.0, 75.0), gsd=1.1, coverage=(0.45, 0.7),
                          shape_weights=(0.8, 0.1, 0.1), absorption=(0.6, 1.0),
                          optics=SynthParams(background_level=225.0, psf_sigma=1.2, dose=600.0))


def synthetic_example(seed: int = 7) -> np.ndarray:
    """A carbon-black-like synthetic image (uint8, 768 x 768)."""
    return generate(seed, CARBON_BLACK_LIKE).image


def _save_png(a: np.ndarray, path: Path, size: int = 512) -> None:
    from PIL import Image

    im = Image.fromarray(a)
    im.thumbnail((size, size))
    im.save(path, optimize=True)


def side_by_side(real: np.ndarray, synth: np.ndarray, path: Path) -> None:
    """Write real | synthetic with both grey-level histograms to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1, 1, 1.1]})
    for a, img, title in ((ax[0], real, "real (carbon black, crop)"), (ax[1], synth, "synthetic")):
        a.imshow(img, cmap="gray", vmin=0, vmax=255)
        a.set_title(title)
        a.axis("off")
    bins = np.arange(257)
    ax[2].hist(real.ravel(), bins, density=True, histtype="step", label="real")
    ax[2].hist(synth.ravel(), bins, density=True, histtype="step", label="synthetic")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("grey level")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def radial_power_spectrum(image: np.ndarray, n_bins: int = 60) -> tuple[np.ndarray, np.ndarray]:
    """(spatial frequency in cycles/px, radially averaged power) of a mean-removed, Hann-windowed
    image: where the spectrum falls shows particle size, blur and noise at once."""
    g = np.asarray(image, float)
    g = (g - g.mean()) * np.outer(np.hanning(g.shape[0]), np.hanning(g.shape[1]))
    power = np.abs(np.fft.fftshift(np.fft.fft2(g))) ** 2 / g.size
    fy = np.fft.fftshift(np.fft.fftfreq(g.shape[0]))
    fx = np.fft.fftshift(np.fft.fftfreq(g.shape[1]))
    f = np.hypot(*np.meshgrid(fy, fx, indexing="ij"))
    edges = np.linspace(0, 0.5, n_bins + 1)
    idx = np.digitize(f.ravel(), edges) - 1
    ok = (idx >= 0) & (idx < n_bins)
    total = np.bincount(idx[ok], power.ravel()[ok], n_bins)
    count = np.maximum(np.bincount(idx[ok], minlength=n_bins), 1)
    return (edges[:-1] + edges[1:]) / 2, total / count


def statistics_figure(reals: list[np.ndarray], synths: list[np.ndarray], path: Path) -> None:
    """Synthetic example | grey-level histograms | power spectra, real against synthetic (mean over
    the images given; no real pixel is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, ax = plt.subplots(1, 3, figsize=(14, 4.4), gridspec_kw={"width_ratios": [1, 1.1, 1.1]})
    ax[0].imshow(synths[0], cmap="gray", vmin=0, vmax=255)
    ax[0].set_title("synthetic (real images: see text)")
    ax[0].axis("off")
    bins = np.arange(257)
    for group, name in ((reals, f"real, {len(reals)} images"), (synths, f"synthetic, {len(synths)} images")):
        hist = np.mean([np.histogram(g, bins, density=True)[0] for g in group], axis=0)
        ax[1].step(bins[:-1], hist, where="post", label=name)
        spectra = [radial_power_spectrum(g) for g in group]
        ax[2].loglog(spectra[0][0][1:], np.mean([p for _, p in spectra], axis=0)[1:], label=name)
    ax[1].set_yscale("log")
    ax[1].set_xlabel("grey level")
    ax[1].set_title("grey-level histogram")
    ax[1].legend()
    ax[2].xaxis.set_minor_formatter(NullFormatter())
    ax[2].set_xlabel("spatial frequency (cycles / px)")
    ax[2].set_title("radially averaged power spectrum")
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def overlay(image: np.ndarray, labels: np.ndarray, color=(255, 40, 40)) -> np.ndarray:
    """RGB uint8 picture of ``image`` with instance outlines of ``labels`` drawn in ``color``."""
    from skimage.segmentation import find_boundaries

    g = np.asarray(image, float)
    g = np.clip((g - g.min()) / max(np.ptp(g), 1e-6) * 255, 0, 255).astype(np.uint8)
    rgb = np.repeat(g[..., None], 3, -1)
    rgb[find_boundaries(labels, mode="inner")] = color
    return rgb


def _densest_window(image: np.ndarray, size: int) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window holding the most particle (Otsu foreground) pixels."""
    from scipy import ndimage as ndi

    from nanolens_tem.science.segmentation import foreground_mask

    m = foreground_mask(image).astype(float)
    d = ndi.uniform_filter(m, size)
    y, x = np.unravel_index(np.argmax(d), d.shape)
    y0 = int(np.clip(y - size // 2, 0, max(0, image.shape[0] - size)))
    x0 = int(np.clip(x - size // 2, 0, max(0, image.shape[1] - size)))
    return slice(y0, y0 + size), slice(x0, x0 + size)


def method_overlays(image: np.ndarray, methods: dict, path: Path, size: int = 420, crop: int | None = None) -> None:
    """One row of overlays, one panel per method (``name -> f(image) -> Segmentation``).

    With ``crop``, a second row shows the densest ``crop`` x ``crop`` window at native resolution.
    """
    from PIL import Image, ImageDraw

    rows = [[], []]
    win = _densest_window(image, crop) if crop else None
    for name, fn in methods.items():
        seg = fn(image)
        full = overlay(image, seg.labels)
        im = Image.fromarray(full)
        im.thumbnail((size, size))
        ImageDraw.Draw(im).text((6, 4), f"{name}: {len(seg.diameters)} particles", fill=(255, 255, 0))
        rows[0].append(im)
        if win:
            c = Image.fromarray(np.ascontiguousarray(full[win]))
            rows[1].append(c.resize((im.width, im.width), Image.NEAREST))
    rows = [r for r in rows if r]
    w = sum(p.width for p in rows[0])
    hs = [max(p.height for p in r) for r in rows]
    out = Image.new("RGB", (w, sum(hs)))
    for k, r in enumerate(rows):
        x = 0
        for p in r:
            out.paste(p, (x, sum(hs[:k])))
            x += p.width
    out.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    from nanolens_tem.evaluation.data import carbon_black_dir, gold_items, read_gray

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--overlays", action="store_true", help="also overlay every method on carbon-black crops")
    ap.add_argument("--cnn", type=Path, help="CNN bundle folder or bare ONNX file (default: the newest shipped bundle)")
    ap.add_argument("--ann", type=Path, help="ANN bundle folder")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    synth = synthetic_example(args.seed)
    _save_png(synth, args.out / "tem_synthetic_example.png")
    files = sorted(carbon_black_dir().glob("*.png"))
    if files:
        real = read_gray(files[0])
        y, x = 100, 1000
        side_by_side(real[y:y + 768, x:x + 768], synth, args.out / "tem_synthetic_vs_real.png")
        # statistics over every real image and as many synthetic ones, at the same 768 px size
        crops = [read_gray(f)[100:868, 1000:1768] for f in files]
        synths = [synth] + [synthetic_example(args.seed + k) for k in range(1, len(crops))]
        statistics_figure(crops, synths, args.out / "tem_synthetic_vs_real_statistics.png")
    else:
        print(f"real images not found under {carbon_black_dir()}; wrote the synthetic half only")
    golds = gold_items()
    if golds:
        reals = [read_gray(i) for _, i, _ in golds]
        synths = [generate_faceted(args.seed + k, GOLD_LIKE).image for k in range(len(reals))]
        statistics_figure(reals, synths, args.out / "tem_faceted_vs_gold_statistics.png")
    if args.overlays:
        from nanolens_tem.bundles import latest_bundle
        from nanolens_tem.evaluation.evaluate import build_methods
        from nanolens_tem.evaluation.splits import TEST_SEED0, eval_params, eval_params_faceted
        from nanolens_tem.synthetic.agglomerates import generate

        methods = build_methods(cnn=args.cnn or latest_bundle("tem-unet"), ann=args.ann or latest_bundle("tem-ann"))
        s = generate(TEST_SEED0, eval_params((384, 384)))
        method_overlays(s.image, methods, args.out / "tem_overlays_synthetic.png", size=384)
        f = generate_faceted(TEST_SEED0 + 200_000, eval_params_faceted((384, 384)))
        method_overlays(f.image, methods, args.out / "tem_overlays_faceted.png", size=384)
        for k, f in enumerate(files):
            real = read_gray(f)
            method_overlays(real, methods, args.out / f"tem_overlays_carbonblack_{k}.png", size=480, crop=512)
    print(f"wrote figures to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
