"""Pictures that justify a number: class maps, probability maps, spectra with probabilities."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

# Matplotlib's tab10, so the class colours match the spectra figure.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


#: Pixels and spectra unlike the model's training data: their class is a guess, drawn in black.
OUT_OF_DOMAIN_COLOUR = (0, 0, 0)


def class_colours(n: int) -> list[str]:
    return ["#{:02x}{:02x}{:02x}".format(*PALETTE[i % len(PALETTE)]) for i in range(n)]


def png_bytes(image: Image.Image, compress_level: int = 6) -> bytes:
    """PNG bytes; ``compress_level`` 1 is several times faster than the default 6 for large pictures."""
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=compress_level)
    return out.getvalue()


def _upscale(image: Image.Image, min_side: int = 256) -> Image.Image:
    factor = max(1, min_side // max(1, min(image.size)))
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


def class_map_png(class_map: np.ndarray, n_classes: int, out_of_domain: np.ndarray | None = None) -> bytes:
    """H x W class indices as a palette PNG (colours as in ``class_colours``); pixels where the
    H x W boolean ``out_of_domain`` is set are drawn in ``OUT_OF_DOMAIN_COLOUR``."""
    indices = class_map.astype(np.uint8)
    colours = [PALETTE[i % len(PALETTE)] for i in range(max(n_classes, 1))]
    if out_of_domain is not None and out_of_domain.any():
        indices = np.where(out_of_domain, len(colours), indices).astype(np.uint8)
        colours.append(OUT_OF_DOMAIN_COLOUR)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([c for colour in colours for c in colour])
    return png_bytes(_upscale(image))


def probability_maps_png(probabilities: np.ndarray, gap: int = 4) -> bytes:
    """H x W x K probabilities as K greyscale panels side by side (white = 1)."""
    h, w, k = probabilities.shape
    canvas = np.full((h, k * w + (k - 1) * gap), 255, dtype=np.uint8)
    for i in range(k):
        canvas[:, i * (w + gap): i * (w + gap) + w] = np.round(probabilities[:, :, i] * 255).astype(np.uint8)
    return png_bytes(_upscale(Image.fromarray(canvas, mode="L")))


def spectra_png(spectra: np.ndarray, axis: np.ndarray | None, probabilities: np.ndarray,
                class_names: list[str], ood_scores: np.ndarray | None = None, max_rows: int = 6) -> bytes:
    """Up to ``max_rows`` spectra, each beside a bar chart of its class probabilities; a spectrum
    whose out-of-domain score is above 1 is drawn in black and labelled so (its class is a guess)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = min(max_rows, len(spectra))
    x = axis if axis is not None else np.arange(spectra.shape[1])
    colours = class_colours(len(class_names))
    fig, axes = plt.subplots(rows, 2, figsize=(9, 1.8 * rows + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 1]})
    for i in range(rows):
        best = int(probabilities[i].argmax())
        outside = ood_scores is not None and ood_scores[i] > 1
        colour = "#{:02x}{:02x}{:02x}".format(*OUT_OF_DOMAIN_COLOUR) if outside else colours[best]
        axes[i, 0].plot(x, spectra[i], lw=0.8, color=colour)
        if outside:
            axes[i, 0].set_title(f"out of domain (score {ood_scores[i]:.1f}): the class is a guess",
                                 fontsize=8, loc="left")
        axes[i, 0].set_ylabel(f"#{i}", rotation=0, labelpad=14)
        axes[i, 0].set_yticks([])
        axes[i, 1].barh(range(len(class_names)), probabilities[i], color=colours)
        axes[i, 1].set_xlim(0, 1)
        axes[i, 1].set_yticks(range(len(class_names)), class_names if i == 0 else [""] * len(class_names),
                              fontsize=7)
        axes[i, 1].invert_yaxis()
    axes[-1, 0].set_xlabel("Raman shift (cm$^{-1}$)" if axis is not None else "channel")
    axes[-1, 1].set_xlabel("probability")
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=90)
    plt.close(fig)
    return out.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def labels_tiff(labels: np.ndarray, pixel_size_nm: float | None = None) -> bytes:
    """uint16 instance labels (0 background, k particle k) as a compressed TIFF; with the input's
    pixel size as ImageJ calibration (nm), so the labels measure like the image they came from."""
    import tifffile

    out = io.BytesIO()
    if pixel_size_nm:
        tifffile.imwrite(out, labels.astype(np.uint16), compression="zlib", imagej=True,
                         resolution=(1 / pixel_size_nm, 1 / pixel_size_nm), metadata={"unit": "nm"})
    else:
        tifffile.imwrite(out, labels.astype(np.uint16), compression="zlib")
    return out.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Grey image scaled to 0..255 between its 0.5th and 99.5th percentiles."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    scaled = (np.asarray(image, np.float32) - lo) / max(float(hi - lo), 1e-6)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, labels: np.ndarray) -> bytes:
    """The micrograph in grey with every particle's outline in a colour of the palette."""
    from skimage.segmentation import find_boundaries

    grey = to_uint8(image)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    edges = find_boundaries(labels, mode="inner")
    colours = np.array(PALETTE, dtype=np.uint8)
    rgb[edges] = colours[labels[edges].astype(np.int64) % len(PALETTE)]
    return png_bytes(Image.fromarray(rgb, mode="RGB"))


def psd_png(diameters: np.ndarray, unit: str, gmd: float, gsd: float, method: str,
            weights: np.ndarray | None = None) -> bytes:
    """Histogram of primary-particle diameters with the geometric mean and sd; with occlusion
    weights (TEM CNN), the weighted histogram is drawn over the found particles' one."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    title = f"{method}: n = {diameters.size}"
    if diameters.size:
        _, edges, _ = ax.hist(diameters, bins=20, color=class_colours(1)[0], edgecolor="white", label="found")
        if weights is not None:
            ax.hist(diameters, bins=edges, weights=weights, histtype="step", color="black", lw=1.2,
                    label="with hidden ones (weights)")
            ax.legend(fontsize=8, frameon=False)
            title += f" (about {weights.sum():.0f} with hidden ones)"
        ax.axvline(gmd, color="black", lw=1, ls="--")
    ax.set_xlabel(f"primary-particle diameter ({unit})")
    ax.set_ylabel("particles")
    ax.set_title(f"{title}, GMD = {gmd:.3g} {unit}, GSD = {gsd:.3g}", fontsize=9)
    fig.tight_layout()
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)
    return out.getvalue()
