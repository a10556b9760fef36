"""Whether the particle sizes in nm depend on the magnification: the shipped CNN (default options) on
real TEM images as they are and resampled by 0.5, 2 and 4, the pixel size scaled to match.

``python -m nanolens_tem.evaluation.magnification [--out build/tem_magnification] [--every 1] [--every-x4 3]``

Sets (``$NANOLENS_DATA``): the 30 gold crystal images (512 x 512, as they are), the 9 SAGE soot
aggregates and the 6 carbon-black agglomerates (2048 x 2048 and 1952 x 2240, binned 4 x 4 first so
that magnification 4 stays within the time of a run; the binned image is the unscaled one);
magnification 4 on every third image of each set (``--every-x4``: its images are 16 times the
pixels, and the instance step at full resolution dominates the time). No
masks are needed: each rescaled result is compared with the unscaled one. Goal: the GMD (in the
unscaled image's pixels, i.e. in nm) within 5 % and the count within 10 %. Rows are cached one per
line in ``OUT/rows.jsonl``; ``OUT/magnification.md`` is the table.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from nanolens_tem.evaluation.data import carbon_black_dir, data_root, gold_items, read_gray, row_cache
from nanolens_tem.science.cnn import resample
from nanolens_tem.science.segmentation import geometric_stats

FACTORS = (1.0, 0.5, 2.0, 4.0)
GMD_WITHIN, COUNT_WITHIN = 0.05, 0.10


def _binned(image: np.ndarray, k: int) -> np.ndarray:
    h, w = image.shape[0] // k * k, image.shape[1] // k * k
    return image[:h, :w].astype(np.float32).reshape(h // k, k, w // k, k).mean((1, 3)).round().astype(np.uint8)


def scaled(image: np.ndarray, factor: float) -> np.ndarray:
    """The image resampled by ``factor`` (bilinear, anti-aliased when shrinking), as uint8."""
    if factor == 1:
        return image
    shape = (round(image.shape[0] * factor), round(image.shape[1] * factor))
    return np.clip(resample(image.astype(np.float32), shape), 0, 255).round().astype(np.uint8)


def images(every: int = 1) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(set, name, unscaled image)``, every ``every``-th image of each set."""
    from PIL import Image

    for _, path, _ in gold_items()[::every]:
        yield "gold", path.stem, read_gray(path)
    soot = data_root() / "tem" / "sage_soot_tem" / "images"
    for path in sorted(soot.glob("*.png"))[::every]:
        yield "soot", path.stem, _binned(np.asarray(Image.open(path).convert("L")), 4)
    for path in sorted(carbon_black_dir().glob("*.png"))[::every]:
        yield "carbon black", path.stem, _binned(read_gray(path), 4)


def analyse(image: np.ndarray, factor: float, cnn) -> dict:
    """The CNN's count and GMD (in the unscaled image's pixels) on the image rescaled by ``factor``."""
    start = time.perf_counter()
    seg = cnn.segment(scaled(image, factor))
    d = seg.diameters[seg.diameters > 0]
    w = None if seg.weights is None else np.asarray(seg.weights)[seg.diameters > 0]
    gmd = geometric_stats(d, w)[0] / factor if len(d) else math.nan
    return {"count": int(len(d)), "gmd": gmd, "scale": seg.scale.factor, "radius_px": seg.scale.typical_radius_px,
            "passes": seg.scale.passes, "seconds": round(time.perf_counter() - start, 2)}


def collect(out: Path, cnn, every: int = 1, every_x4: int = 3) -> list[dict]:
    rows = []
    seen: dict[str, int] = {}
    with row_cache(out) as (done, record):
        for group, name, image in images(every):
            seen[group] = seen.get(group, -1) + 1
            for factor in FACTORS:
                if factor == 4 and seen[group] % every_x4:
                    continue
                key = f"{group}/{name}@{factor:g}"
                if key not in done:
                    record({"id": key, "set": group, "image": name, "factor": factor, **analyse(image, factor, cnn)})
                    print(key, done[key], flush=True)
                rows.append(done[key])
    return rows


def ratios(rows: list[dict]) -> list[dict]:
    """Each rescaled row against its image's unscaled one."""
    base = {(r["set"], r["image"]): r for r in rows if r["factor"] == 1}
    out = []
    for r in rows:
        b = base.get((r["set"], r["image"]))
        if r["factor"] == 1 or b is None or not b["count"]:
            continue
        out.append({"set": r["set"], "factor": r["factor"], "gmd_ratio": r["gmd"] / b["gmd"] if r["count"] else 0.0,
                    "count_ratio": r["count"] / b["count"]})
    return out


def report(rows: list[dict]) -> str:
    rel = ratios(rows)
    lines = ["| set | scale | images | GMD within 5 % | GMD ratio, median (range) | count within 10 % | "
             "count ratio, median (range) |", "|---|---|---|---|---|---|---|"]
    groups = sorted({(r["set"], r["factor"]) for r in rel}, key=lambda k: (k[0] != "gold", k[0], k[1]))
    for group, factor in [*groups, ("all", None)]:
        sel = [r for r in rel if group == "all" or (r["set"] == group and r["factor"] == factor)]
        g = np.array([r["gmd_ratio"] for r in sel])
        c = np.array([r["count_ratio"] for r in sel])
        within_g, within_c = int(np.sum(np.abs(g - 1) <= GMD_WITHIN)), int(np.sum(np.abs(c - 1) <= COUNT_WITHIN))
        lines.append(f"| {group} | {'all' if factor is None else f'{factor:g}'} | {len(sel)} | {within_g} | "
                     f"{np.median(g):.2f} ({g.min():.2f}-{g.max():.2f}) | {within_c} | "
                     f"{np.median(c):.2f} ({c.min():.2f}-{c.max():.2f}) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/tem_magnification"))
    ap.add_argument("--cnn", type=Path, default=Path(__file__).resolve().parents[1] / "bundles" / "tem-unet" / "1.5.0")
    ap.add_argument("--every", type=int, default=1, help="every n-th image of each set (1: all)")
    ap.add_argument("--every-x4", type=int, default=3, help="magnification 4 on every n-th of those")
    args = ap.parse_args(argv)
    from nanolens_tem.science.cnn import CnnSegmenter

    rows = collect(args.out, CnnSegmenter.from_bundle(args.cnn, threads=1, scale="auto"), args.every, args.every_x4)
    text = report(rows)
    (args.out / "magnification.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
