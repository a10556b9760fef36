"""The public evaluation sets under ``NANOLENS_DATA`` (default ``../shared/data``): loaders and scores.

- ``lpem/msaem_insitu_sintering``: 40 bright-field TEM frames with binary masks (msa-em
  microscopy-seg-track, CC-BY-4.0); instances are the 4-connected components of the masks.
- ``lpem/chenlab_lptem_supracrystal_frame/SAMPLE_0001.tif``: one liquid-phase TEM frame
  (Ou et al., Nat. Commun. 2020, MIT); the authors found particle radii of 6-15 px.
- ``lpem/trackpy_colloid_video/bulk-water.mov``: Brownian colloids (trackpy test data, BSD-3).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

REPO = Path(__file__).resolve().parents[4]


def data_dir() -> Path:
    return Path(os.environ.get("NANOLENS_DATA", REPO.parent / "shared" / "data")) / "lpem"


def sintering_items() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, H x W uint8 image, H x W instance labels) of the 40 masked sintering frames."""
    from PIL import Image

    root = data_dir() / "msaem_insitu_sintering" / "dataset"
    items = []
    for split in ("train", "test"):
        for path in sorted((root / split / "images").glob("image_*.png")):
            label = root / split / "labels" / path.name.replace("image_", "label_")
            image = np.asarray(Image.open(path))[..., 0]
            mask = np.asarray(Image.open(label))
            mask = (mask[..., 0] if mask.ndim == 3 else mask) > 0
            items.append((f"{split}/{path.name}", image, ndi.label(mask)[0]))
    return items


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    """Baseline: Otsu threshold of the smoothed frame (dark particles), distance-transform watershed."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    smooth = gaussian(image.astype(float), 1.5)
    fg = smooth < threshold_otsu(smooth)
    dist = ndi.distance_transform_edt(fg)
    peaks = peak_local_max(dist, min_distance=5, labels=ndi.label(fg)[0])
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=fg)


def evaluate_sintering(session) -> dict:
    from nanolens_lpem.evaluation.metrics import match, summarise
    from nanolens_lpem.science.segmentation import segment_frames

    items = sintering_items()
    out = {}
    for binning in (1, 2, 4, 8):  # the particles here are radius ~15-60 px; the U-Net saw 3-16 px
        rows = [match(truth, segment_frames(session, image[None], binning=binning)[0].labels)
                for _, image, truth in items]
        out[f"nanolens_bin{binning}"] = summarise(rows)
    out["otsu_watershed"] = summarise([match(truth, otsu_watershed(image)) for _, image, truth in items])
    return out


def evaluate_supracrystal(session) -> dict:
    import tifffile

    from nanolens_lpem.science.segmentation import segment_frames

    image = tifffile.imread(data_dir() / "chenlab_lptem_supracrystal_frame" / "SAMPLE_0001.tif")
    out = {}
    for binning in (1, 2):
        table = segment_frames(session, image[None], binning=binning)[0].table
        out[f"bin{binning}"] = radius_summary(table[:, 4] / 2)
    return out


def radius_summary(radii: np.ndarray) -> dict:
    return {"n_particles": int(len(radii)), "median_radius_px": float(np.median(radii)) if len(radii) else None,
            "radius_p10_p90_px": [float(v) for v in np.percentile(radii, (10, 90))] if len(radii) else None,
            "fraction_in_6_15_px": float(np.mean((radii >= 6) & (radii <= 15))) if len(radii) else None,
            "published_radius_range_px": [6, 15]}


def evaluate_colloids(session, n_frames: int = 120) -> dict:
    import imageio_ffmpeg

    from nanolens_lpem.evaluation.compare import (
        ensemble_d,
        nanolens_tracks,
        trackpy_emsd_d,
        trackpy_link,
        trackpy_locate,
    )

    path = data_dir() / "trackpy_colloid_video" / "bulk-water.mov"
    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bits_per_pixel=8)
    meta = next(reader)
    w, h = meta["size"]
    frames = []
    for raw in reader:
        frames.append(np.frombuffer(raw, np.uint8).reshape(h, w))
        if len(frames) == n_frames:
            break
    reader.close()
    images = np.stack(frames)
    nl, t_nl = nanolens_tracks(session, images)
    t0 = time.perf_counter()
    feats = trackpy_locate(images, 11, invert=True)  # the trackpy walkthrough's settings for this video
    tp_table = trackpy_link(feats, 100.0, search=5.0)
    t_tp = time.perf_counter() - t0
    return {"frames": len(images), "fps": float(meta.get("fps") or 0),
            "nanolens": {"tracks": int(len(np.unique(nl["track"]))), "detections": int(len(nl["frame"])),
                         "d_px2_per_frame": ensemble_d(nl, len(images)), "seconds": t_nl},
            "trackpy": {"tracks": int(len(np.unique(tp_table["track"]))), "detections": int(len(tp_table["frame"])),
                        "d_px2_per_frame": ensemble_d(tp_table, len(images)),
                        "d_emsd_px2_per_frame": trackpy_emsd_d(tp_table), "seconds": t_tp,
                        "settings": "locate diameter 11, invert, minmass 100; link search 5 px, memory 3"}}


def evaluate(session) -> dict:
    if not data_dir().is_dir():
        return {"skipped": f"no data at {data_dir()} (set NANOLENS_DATA)"}
    return {"sintering": evaluate_sintering(session), "supracrystal": evaluate_supracrystal(session),
            "colloids": evaluate_colloids(session)}
