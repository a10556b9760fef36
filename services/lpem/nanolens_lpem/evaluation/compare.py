"""NanoLens against trackpy on synthetic movies with ground truth, and on the public real data.

``python -m nanolens_lpem.evaluation.compare --out lpem_eval.json [--movies N] [--frames T]``

Synthetic: for each contrast x dose condition, ``--movies`` movies (seeds 200000.., never trained
on) of 256 x 256 px, ``--frames`` frames, 25 particles, D = 1 px^2/frame. Tracking accuracy with
py-motmetrics (MOTA, IDF1; a detection matches a true particle within 5 px), position error of
matched detections, and the ensemble D from both trackers' tracks (the same covariance-based
estimator, drift removed) and trackpy's own ``emsd`` fit. trackpy is tuned per condition on
separate tuning movies (seeds 300000..): ``locate`` diameter in {7, 11, 15} with ``invert=True``
and a minimum mass chosen from 20 quantiles of the found masses, for the best MOTA; ``link``
with the same search range (10 px), memory (3 frames) and adaptive search (stop 1 px, step 0.9) as
NanoLens, stubs under 3 frames dropped.

Real (``NANOLENS_DATA``): the in-situ sintering masks (instance F1 at IoU 0.5, count error, pixel
IoU; baseline Otsu threshold + distance watershed), the liquid-cell supracrystal frame (radii
against the published 6-15 px) and the colloid video (D from both trackers).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from nanolens_lpem.science import dynamics
from nanolens_lpem.science.segmentation import segment_frames
from nanolens_lpem.science.tracking import StreamLinker
from nanolens_lpem.synthetic.movies import MovieParams, frames

CONDITIONS = [(c, d) for c in (0.08, 0.15, 0.3) for d in (20.0, 100.0)]  # (contrast, dose e/px)
MATCH_PX = 5.0
D_TRUE = 1.0


def movie(contrast: float, dose: float, seed: int, n_frames: int):
    p = MovieParams(shape=(256, 256), n_frames=n_frames, n_particles=25, diffusion=D_TRUE, contrast=contrast,
                    dose=dose, radius_range=(4.0, 7.0), margin=12)
    fr = list(frames(p, seed))
    return np.stack([f.image for f in fr]), fr


def nanolens_tracks(session, images: np.ndarray, search: float = 10.0, memory: int = 3,
                    dark: bool = True) -> tuple[dict, float]:
    """Segment and link in chunks of 8 frames, as the service does; returns (table, seconds)."""
    from nanolens_lpem.service import MovieState, Settings

    t0 = time.perf_counter()
    state = MovieState(Settings(search_range_px=search, memory_frames=memory), StreamLinker(search, memory))
    for i in range(0, len(images), 8):
        state.add(segment_frames(session, images[i:i + 8], dark_particles=dark), images[i:i + 8])
    state.linker.close()
    table = state.table()
    counts = np.bincount(table["track"], minlength=1)
    keep = counts[table["track"]] >= 3
    return {k: v[keep] for k, v in table.items()}, time.perf_counter() - t0


def trackpy_locate(images: np.ndarray, diameter: int, invert: bool = True):
    import trackpy as tp

    tp.quiet()
    return tp.batch(list(images), diameter, invert=invert, minmass=0, processes=1)


def trackpy_link(features, minmass: float, search: float = 10.0, memory: int = 3) -> dict:
    import trackpy as tp

    f = features[features["mass"] >= minmass]
    if f.empty:
        return {k: np.zeros(0) for k in ("frame", "track", "row", "col", "diameter")}
    linked = tp.filter_stubs(tp.link(f, search, memory=memory, adaptive_stop=1.0, adaptive_step=0.9), 3)
    return {"frame": linked["frame"].to_numpy(int), "track": linked["particle"].to_numpy(int) + 1,
            "row": linked["y"].to_numpy(float), "col": linked["x"].to_numpy(float),
            "diameter": 2 * linked["size"].to_numpy(float)}


def mot_scores(truth, table: dict) -> dict:
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=False)
    by_frame = {}
    for i, f in enumerate(table["frame"]):
        by_frame.setdefault(int(f), []).append(i)
    errors = []
    for fr in truth:
        idx = by_frame.get(fr.index, [])
        hyp = np.column_stack([table["row"][idx], table["col"][idx]]) if idx else np.zeros((0, 2))
        dist = mm.distances.norm2squared_matrix(fr.positions, hyp, max_d2=MATCH_PX**2)
        acc.update(fr.tracks.tolist(), [int(table["track"][i]) for i in idx], dist, frameid=fr.index)
        finite = np.sqrt(dist[np.isfinite(dist)]) if dist.size else np.zeros(0)
        errors.append(finite)
    summary = mm.metrics.create().compute(acc, metrics=["mota", "idf1", "motp", "num_switches", "num_objects",
                                                         "num_false_positives", "num_misses"])
    row = summary.iloc[0]
    return {"mota": float(row["mota"]), "idf1": float(row["idf1"]), "position_err_px": float(np.sqrt(row["motp"])),
            "id_switches": int(row["num_switches"]), "n_truth": int(row["num_objects"]),
            "false_positives": int(row["num_false_positives"]), "misses": int(row["num_misses"])}


def ensemble_d(table: dict, n_frames: int) -> float:
    if not len(table["frame"]):
        return float("nan")
    return dynamics.diffusion(table, dynamics.drift(table, n_frames)).d


def trackpy_emsd_d(table: dict) -> float:
    import pandas as pd
    import trackpy as tp

    if not len(table["frame"]):
        return float("nan")
    df = pd.DataFrame({"frame": table["frame"], "particle": table["track"], "x": table["col"], "y": table["row"]})
    msd = tp.emsd(df, mpp=1.0, fps=1.0, max_lagtime=4)
    slope = np.polyfit(msd.index.to_numpy(float), msd.to_numpy(float), 1)[0]
    return float(slope / 4)


def tune_trackpy(contrast: float, dose: float, n_frames: int) -> dict:
    images, truth = movie(contrast, dose, 300_000 + int(contrast * 1000) + int(dose), n_frames)
    best = {"mota": -np.inf}
    for diameter in (7, 11, 15):
        feats = trackpy_locate(images, diameter)
        if feats.empty:
            continue
        for q in np.linspace(0.0, 0.95, 20):
            minmass = float(np.quantile(feats["mass"], q))
            s = mot_scores(truth, trackpy_link(feats, minmass))
            if s["mota"] > best["mota"]:
                best = {"mota": s["mota"], "diameter": diameter, "minmass": minmass, "quantile": float(q)}
    return best


def synthetic(session, n_movies: int, n_frames: int) -> list[dict]:
    rows = []
    for contrast, dose in CONDITIONS:
        tuned = tune_trackpy(contrast, dose, n_frames)
        for k in range(n_movies):
            seed = 200_000 + 100 * k + int(contrast * 1000) + int(dose)
            images, truth = movie(contrast, dose, seed, n_frames)
            nl, t_nl = nanolens_tracks(session, images)
            t0 = time.perf_counter()
            feats = trackpy_locate(images, tuned["diameter"])
            tp_table = trackpy_link(feats, tuned["minmass"])
            t_tp = time.perf_counter() - t0
            rows.append({"contrast": contrast, "dose": dose, "seed": seed, "frames": n_frames,
                         "trackpy_tuning": tuned,
                         "nanolens": {**mot_scores(truth, nl), "d": ensemble_d(nl, n_frames), "seconds": t_nl},
                         "trackpy": {**mot_scores(truth, tp_table), "d": ensemble_d(tp_table, n_frames),
                                     "d_emsd": trackpy_emsd_d(tp_table), "seconds": t_tp}})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main(argv=None) -> int:
    import onnxruntime as ort

    from nanolens_lpem.bundles import latest_bundle

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--movies", type=int, default=2)
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--skip-synthetic", action="store_true")
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args(argv)
    session = ort.InferenceSession(str(latest_bundle("lpem-unet") / "model.onnx"), providers=["CPUExecutionProvider"])
    out = {}
    if not args.skip_synthetic:
        out["synthetic"] = synthetic(session, args.movies, args.frames)
    if not args.skip_real:
        from nanolens_lpem.evaluation import real

        out["real"] = real.evaluate(session)
    args.out.write_text(json.dumps(out, indent=1))
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
