"""Whether the movie analysis's particle count depends on the magnification: the shipped U-Net with
default options (the binning chosen from the first frame) on the real frames as they are and
downscaled by 2 (2 x 2 pixel means, the pixel size doubled), and, where masks exist, against them.

``python -m nanolens_lpem.evaluation.binning [--out build/lpem_binning] [--every 2]``

Frames (``$NANOLENS_DATA/lpem``, see :mod:`nanolens_lpem.evaluation.real`): the masked in-situ
sintering frames (every ``--every``-th of 40), the liquid-cell supracrystal frame, and the 5 frames
of the trackpy colloid sequence (one movie: the binning chosen on its first frame). Goal: the
count per frame at half size within 10 % of the count as it is. Rows are cached one per line in
``OUT/rows.jsonl``; ``OUT/binning.md`` is the table.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from nanolens_lpem.evaluation.real import data_dir, sintering_items
from nanolens_lpem.science.segmentation import bin_frames, choose_binning, segment_frames

COUNT_WITHIN = 0.10


def movies(every: int = 2):
    """``(set, name, T x H x W frames, truth count or None)``."""
    import tifffile
    from PIL import Image

    for name, image, truth in sintering_items()[::every]:
        yield "sintering", name, image[None], int(truth.max())
    supra = data_dir() / "chenlab_lptem_supracrystal_frame" / "SAMPLE_0001.tif"
    yield "supracrystal", supra.stem, tifffile.imread(supra)[None], None
    sequence = sorted((data_dir() / "trackpy_colloid_video" / "image_sequence").glob("*.png"))
    yield "colloids", "image_sequence", np.stack([np.asarray(Image.open(p).convert("L")) for p in sequence]), None


def analyse(session, frames: np.ndarray, binning: int = 0) -> dict:
    """Mean detections per frame at ``binning`` (0: chosen from the first frame, as the service does)."""
    choice = choose_binning(session, frames[0]) if binning == 0 else None
    b = choice.binning if choice else binning
    counts = [len(f.table) for f in segment_frames(session, frames, binning=b)]
    return {"binning": b, "radius_px": choice.typical_radius_px if choice else math.nan,
            "count": float(np.mean(counts))}


def collect(out: Path, session, every: int) -> list[dict]:
    path = out / "rows.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[row["id"]] = row
    rows = []
    with path.open("a") as f:
        for group, name, frames, truth in movies(every):
            key = f"{group}/{name}"
            if key not in done:
                row = {"id": key, "set": group, "truth": truth, "as_is": analyse(session, frames),
                       "half": analyse(session, bin_frames(frames, 2)), "unbinned": analyse(session, frames, 1)}
                done[key] = row
                f.write(json.dumps(row) + "\n")
                f.flush()
                print(key, row, flush=True)
            rows.append(done[key])
    return rows


def _against_masks(rows: list[dict], key: str) -> str:
    """Pooled count error against the masks (frames with masks only)."""
    truth = [r for r in rows if r["truth"]]
    if not truth:
        return "no masks"
    return f"{sum(r[key]['count'] for r in truth) / sum(r['truth'] for r in truth) - 1:+.1%}"


def report(rows: list[dict]) -> str:
    lines = ["| set | frames or movies | count at half size within 10 % | count ratio half / as is, median (range) | "
             "binning chosen as is; half | count against masks: chosen binning | unbinned (the previous default) |",
             "|---|---|---|---|---|---|---|"]
    for group in sorted({r["set"] for r in rows}, key=lambda g: g != "sintering"):
        sel = [r for r in rows if r["set"] == group]
        ratio = np.array([r["half"]["count"] / r["as_is"]["count"] if r["as_is"]["count"] else math.nan for r in sel])
        within = int(np.sum(np.abs(ratio - 1) <= COUNT_WITHIN))
        bins = f"{'/'.join(sorted({str(r['as_is']['binning']) for r in sel}))}; " \
               f"{'/'.join(sorted({str(r['half']['binning']) for r in sel}))}"
        lines.append(f"| {group} | {len(sel)} | {within} | {np.median(ratio):.2f} "
                     f"({ratio.min():.2f}-{ratio.max():.2f}) | {bins} | {_against_masks(sel, 'as_is')} | "
                     f"{_against_masks(sel, 'unbinned')} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort

    from nanolens_lpem.bundles import latest_bundle

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("build/lpem_binning"))
    ap.add_argument("--every", type=int, default=2, help="every n-th sintering frame (1: all 40)")
    args = ap.parse_args(argv)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(latest_bundle("lpem-unet") / "model.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    rows = collect(args.out, session, args.every)
    text = report(rows)
    (args.out / "binning.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
