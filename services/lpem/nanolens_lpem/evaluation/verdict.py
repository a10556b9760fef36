"""The movie verdict's signals on movies of particles and on movies that are none.

``python -m nanolens_lpem.evaluation.verdict [--seed0 1000] [--real]``

Per movie (128 x 128 px, 24 frames): synthetic particles (6, parameters drawn per seed), noise
(6: uniform and Gaussian, either polarity), frames of 24 unrelated movies (4) and invisible
particles (2), segmented and linked as the service does; prints the linked fraction, the median
contrast-to-noise and whether :func:`nanolens_lpem.science.quality.judge` flags it. ``--seed0``
moves every seed (1000: the thresholds' fit; 3000: held out). ``--real`` adds the trackpy colloid
frames in ``$NANOLENS_DATA`` (docs/lpem-evaluation.md, "Verdict").
"""

from __future__ import annotations

import argparse

import numpy as np

from nanolens_lpem.evaluation.real import data_dir
from nanolens_lpem.science import quality
from nanolens_lpem.science.segmentation import segment_frames
from nanolens_lpem.science.tracking import StreamLinker
from nanolens_lpem.synthetic.movies import MovieParams, generate

SHAPE, FRAMES = (128, 128), 24


def signals(session, frames: np.ndarray, dark: bool = True) -> dict:
    """Detections, linked fraction and median contrast of one movie, as the service measures them."""
    from nanolens_lpem.service import MIN_TRACK_FRAMES, MovieState, Settings

    segs = segment_frames(session, frames, dark_particles=dark)
    state = MovieState(Settings(), StreamLinker(10.0, 3))
    state.add(segs, frames)
    track = state.table()["track"]
    linked = float((np.bincount(track)[track] >= MIN_TRACK_FRAMES).mean()) if len(track) else 0.0
    contrast = float(np.median(state.contrast))
    return {"detections": int(len(track)), "linked_fraction": round(linked, 3), "contrast": round(contrast, 2),
            "flagged": bool(quality.judge(linked, contrast))}


def movies(seed0: int):
    """(kind, frames, dark) of every movie of the evaluation."""
    for k in range(6):
        r = np.random.default_rng(seed0 + 100 + k)
        params = MovieParams(shape=SHAPE, n_frames=FRAMES, n_particles=int(r.integers(6, 20)),
                             contrast=float(r.uniform(0.15, 0.4)), diffusion=float(r.uniform(0.5, 4)),
                             dose=float(r.uniform(20, 80)))
        yield "particles", generate(params, seed=seed0 + k)[0], True
    for k in range(6):
        r = np.random.default_rng(seed0 + 200 + k)
        noise = r.random((FRAMES, *SHAPE)) if k % 2 else r.normal(0.5, 0.1, (FRAMES, *SHAPE))
        yield "noise", noise.astype(np.float32), bool(k % 3)
    one = MovieParams(shape=SHAPE, n_frames=1, n_particles=14, contrast=0.3)
    for k in range(4):
        yield "unrelated frames", np.stack([generate(one, seed=seed0 + 4000 + 100 * k + i)[0][0]
                                            for i in range(FRAMES)]), True
    for k in range(2):
        invisible = MovieParams(shape=SHAPE, n_frames=FRAMES, n_particles=1, contrast=0.0)
        yield "invisible particles", generate(invisible, seed=seed0 + 6000 + k)[0], True


def main(argv: list[str] | None = None) -> None:
    import onnxruntime as ort

    from nanolens_lpem.bundles import latest_bundle
    from nanolens_runtime.bundles import ModelBundle

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed0", type=int, default=1000)
    ap.add_argument("--real", action="store_true")
    args = ap.parse_args(argv)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(ModelBundle.load(latest_bundle("lpem-unet")).onnx_path, options,
                                   providers=["CPUExecutionProvider"])
    for kind, frames, dark in movies(args.seed0):
        print(kind, signals(session, frames, dark))
    if args.real:
        from PIL import Image

        files = sorted((data_dir() / "trackpy_colloid_video" / "image_sequence").glob("*.png"))
        frames = np.stack([np.asarray(Image.open(f).convert("L")) for f in files]).astype(np.float32)
        for dark in (True, False):
            print("trackpy colloids", "dark" if dark else "as bright", signals(session, frames, dark))


if __name__ == "__main__":
    main()
