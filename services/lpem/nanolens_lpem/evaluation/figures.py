"""Pictures for docs/lpem.md: synthetic frames beside the real ones, with the U-Net's instances.

``python -m nanolens_lpem.evaluation.figures --out docs/images/lpem``
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def main(argv=None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import onnxruntime as ort
    import tifffile
    from skimage.segmentation import find_boundaries

    from nanolens_lpem.bundles import latest_bundle
    from nanolens_lpem.evaluation.real import data_dir, sintering_items
    from nanolens_lpem.science.segmentation import segment_frames
    from nanolens_lpem.synthetic.movies import MovieParams, frames

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    session = ort.InferenceSession(str(latest_bundle("lpem-unet") / "model.onnx"), providers=["CPUExecutionProvider"])
    panels = []
    for contrast, dose in ((0.3, 100.0), (0.1, 20.0)):
        p = MovieParams(shape=(256, 256), n_frames=1, n_particles=30, contrast=contrast, dose=dose,
                        radius_range=(4, 8))
        f = next(frames(p, seed=123))
        panels.append((f"synthetic, contrast {contrast}, {dose:g} e/px", f.image, 1))
    real = data_dir()
    if real.is_dir():
        image = tifffile.imread(real / "chenlab_lptem_supracrystal_frame" / "SAMPLE_0001.tif")
        panels.append(("real liquid-cell frame (Ou et al. 2020), crop", image[256:512, 256:512].astype(np.float32), 1))
        _, sinter, _ = sintering_items()[0]
        panels.append(("real in-situ sintering frame (msa-em), binning 4", sinter.astype(np.float32), 4))
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.6))
    for k, (title, image, binning) in enumerate(panels):
        labels = segment_frames(session, image[None], binning=binning)[0].labels
        axes[0, k].imshow(image, cmap="gray")
        axes[0, k].set_title(title, fontsize=8)
        lo, hi = np.percentile(image, (1, 99))
        rgb = np.repeat(np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, axis=2)
        rgb[find_boundaries(labels)] = (1.0, 0.2, 0.2)
        axes[1, k].imshow(rgb)
        axes[1, k].set_title(f"lpem-unet: {int(labels.max())} particles", fontsize=8)
        for ax in axes[:, k]:
            ax.set_axis_off()
    fig.tight_layout()
    fig.savefig(args.out / "synthetic_vs_real.png", dpi=90)
    print("wrote", args.out / "synthetic_vs_real.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
