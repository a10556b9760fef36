"""``make demo``: the whole platform on loopback, on generated sample data with known truth.

Starts the S3 server, every registered domain service and the gateway; writes seeded synthetic
samples (a two-column spectrum, a multi-spectrum CSV, a 64 x 64 spectral map, TEM images of
agglomerates and of faceted crystals with their pixel size in ImageJ metadata, a liquid-cell
movie of diffusing particles as a TIFF stack, an SEM-like texture with an information bar and a
charging defect); uploads and
analyses each through the gateway; asks once more for the map to show the stored result coming back; writes results,
artefacts and a summary that compares each answer with the generator's ground truth into the
output folder; stops everything it started.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from nanolens_cli.stack import Stack
from nanolens_client import Client

SEED = 2021  # Gravely & Roxbury's year: any fixed number makes the demo reproducible
MAP_SIZE = 64
TEM_PIXEL_NM = 0.5
MOVIE_DIFFUSION = 1.0  # px^2 per frame, the generator's truth
SEM_BAR_ROWS = 48


def write_samples(folder: Path) -> dict[str, dict]:
    """Sample files and their ground truth."""
    from nanolens_lpem.synthetic.movies import MovieParams
    from nanolens_lpem.synthetic.movies import generate as generate_movie
    from nanolens_sem.synthetic.textures import generate as generate_texture
    from nanolens_sem.synthetic.textures import with_info_bar
    from nanolens_spectra.synthetic.swcnt import generate_map, generate_spectra
    from nanolens_tem.synthetic.agglomerates import SynthParams
    from nanolens_tem.synthetic.agglomerates import generate as generate_tem
    from nanolens_tem.synthetic.faceted import FacetedParams, generate_faceted

    folder.mkdir(parents=True, exist_ok=True)
    batch = generate_spectra(n_per_class=4, seed=SEED)
    order = np.random.default_rng(SEED).permutation(len(batch.labels))
    spectra, labels = batch.spectra[order], batch.labels[order]

    single = folder / "single_spectrum.txt"
    np.savetxt(single, np.column_stack([batch.axis, spectra[0]]), fmt="%.4f", delimiter="\t",
               header="raman_shift_cm-1\tcounts", comments="")
    matrix = folder / "spectra.csv"
    np.savetxt(matrix, np.vstack([batch.axis[None, :], spectra]), fmt="%.4f", delimiter=",")
    cube, truth = generate_map(MAP_SIZE, MAP_SIZE, seed=SEED)
    spectral_map = folder / f"map_{MAP_SIZE}x{MAP_SIZE}.npy"
    np.save(spectral_map, cube)
    micrographs = {"agglomerates.tif": generate_tem(SEED, SynthParams(shape=(512, 512), gmd=22.0, gsd=1.2)),
                   "crystals.tif": generate_faceted(SEED, FacetedParams(shape=(512, 512), gmd=40.0, gsd=1.1)),
                   # particles of 5 px, under what the CNN sizes: a wrong GMD that says so (quality)
                   "tiny_particles.tif": generate_tem(SEED, SynthParams(shape=(256, 256), gmd=5.0, gsd=1.2,
                                                                        d_min=2.0))}
    for name, micrograph in micrographs.items():
        tifffile.imwrite(folder / name, micrograph.image, imagej=True, metadata={"unit": "nm"},
                         resolution=(1 / TEM_PIXEL_NM, 1 / TEM_PIXEL_NM))
    movie_params = MovieParams(shape=(192, 192), n_frames=60, n_particles=20, diffusion=MOVIE_DIFFUSION)
    frames, _, _ = generate_movie(movie_params, seed=SEED)
    movie = folder / "movie.tif"
    tifffile.imwrite(movie, frames.astype(np.uint16))
    texture = generate_texture(SEED, (512, 512), kind="particles", anomaly=True)
    sem = folder / "sem_particles.png"
    from PIL import Image

    Image.fromarray((with_info_bar(texture.image, SEM_BAR_ROWS, SEED) * 255).astype(np.uint8)).save(sem)
    return {
        single.name: {"path": single, "kind": "spectra", "truth": labels[:1]},
        matrix.name: {"path": matrix, "kind": "spectra", "truth": labels},
        spectral_map.name: {"path": spectral_map, "kind": "spectral_map", "truth": truth},
        **{name: {"path": folder / name, "kind": "particle_sizes",
                  "truth": micrograph.diameters * TEM_PIXEL_NM} for name, micrograph in micrographs.items()},
        movie.name: {"path": movie, "kind": "lpem_movie",
                     "truth": np.array([movie_params.n_particles, MOVIE_DIFFUSION])},
        sem.name: {"path": sem, "kind": "sem_image", "truth": texture.anomaly,
                   "options": {"lens": "all", "anomaly": "yes", "embed": "demo"}},
    }


def _versus_truth(result: dict, folder: Path, truth: np.ndarray) -> dict:
    """Accuracy for classifications; GMD and GSD relative errors for particle sizes; the ensemble
    diffusion coefficient's relative error and the tracks for a movie."""
    if result["analysis"] == "sem_image":  # truth: the defect's mask
        percentiles = np.load(folder / "anomaly_percentiles.npy")
        block = result["anomaly"]["block_px"]
        h, w = truth.shape
        defect = truth[:h - h % block, :w - w % block].reshape(h // block, block, w // block, block).mean((1, 3)) > 0.25
        return {"info_bar_rows": result["image"]["info_bar_rows"], "info_bar_rows_true": SEM_BAR_ROWS,
                "defect_block_percentile": round(float(percentiles[defect].max()), 1),
                "median_block_percentile": round(float(np.median(percentiles[~defect])), 1)}
    if result["analysis"] == "lpem_movie":
        n_particles, diffusion = truth
        d = result["diffusion"]["d_px2_per_frame"]
        return {"d_error": None if d is None else round(d / diffusion - 1, 4),
                "tracks": result["diffusion"]["n_tracks"], "particles_true": int(n_particles)}
    if result["analysis"] == "particle_sizes":
        from nanolens_tem.science.segmentation import geometric_stats

        gmd, gsd = geometric_stats(truth)
        dist = result["distribution"]
        return {"gmd_error": round(dist["gmd_nm"] / gmd - 1, 4), "gsd_error": round(dist["gsd"] / gsd - 1, 4),
                "particles_found": dist["count"], "particles_true": int(truth.size),
                "occlusion_corrected": dist.get("occlusion_corrected", False),
                "particles_estimated": dist.get("estimated_count", dist["count"]),
                "trustworthy": result["quality"]["trustworthy"], "warnings": len(result["quality"]["warnings"])}
    if "class_fractions" in result:  # the true map beside class_map.png, in the colours the result declares
        _truth_png(truth, result["class_names"], result["class_colours"], folder / "truth_class_map.png")
    return {"accuracy": round(_accuracy(result, folder, truth), 4)}


def _truth_png(truth: np.ndarray, names: list[str], colours: dict[str, str], path: Path) -> None:
    from PIL import Image

    palette = np.array([[int(colours[n].lstrip("#")[i:i + 2], 16) for i in (0, 2, 4)] for n in names], np.uint8)
    image = Image.fromarray(palette[truth])
    factor = max(1, 256 // min(truth.shape))
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(path)


def _accuracy(result: dict, folder: Path, truth: np.ndarray) -> float:
    names = result["class_names"]
    if "class_fractions" in result:
        predicted = np.load(folder / "class_map.npy")
    else:
        predicted = np.array([names.index(row["class"]) for row in result["spectra"]])
    return float((predicted == truth).mean())


def run_demo(out: Path) -> int:
    out = Path(out)
    samples = write_samples(out / "samples")
    summary = {"seed": SEED, "analyses": []}
    stack = Stack(log_dir=out / "logs", data_dir=out / "store", fresh=True)  # its own data, fresh each time
    print("starting the stack (object store, domain services, gateway) ...", file=sys.stderr)
    endpoints = stack.start()
    print(f"gateway {endpoints.gateway}, S3 {endpoints.s3}, data in {stack.data_dir}", file=sys.stderr)
    client = Client(endpoints.gateway)
    try:
        for name, sample in samples.items():
            uploaded = client.upload(sample["path"], timeout=120)
            start = time.perf_counter()
            result = client.analyse_object(uploaded.object, sample["kind"], timeout=600, **sample.get("options", {}))
            seconds = time.perf_counter() - start
            folder = out / Path(name).stem
            client.save(result, folder)
            versus = _versus_truth(result.document, folder, sample["truth"])
            entry = {"sample": name, "analysis": result.analysis, "versus_truth": versus,
                     "seconds": round(seconds, 3),
                     "model": f"{result.provenance.model_name}:{result.provenance.model_version}",
                     "result": str(result.location), "outputs": sorted(p.name for p in folder.iterdir())}
            if sample["kind"] == "spectral_map":
                again = time.perf_counter()
                repeat = client.analyse_object(uploaded.object, sample["kind"], timeout=600)
                entry["repeat"] = {"cached": repeat.cached, "seconds": round(time.perf_counter() - again, 3),
                                   "same_result": repeat.location == result.location}
            summary["analyses"].append(entry)
            told = ", ".join(f"{k} {v:+.1%}" if "error" in k and v is not None else
                             f"{k} {v:.1%}" if k == "accuracy" else f"{k} {v}" for k, v in versus.items())
            print(f"{name:<20} {entry['analysis']:<15} {told}  ({seconds:.2f} s)", file=sys.stderr)
        summary["models"] = [f"{m.name}:{m.version}" for s in client.list_models().services for m in s.models]
    finally:
        client.close()
        stack.stop()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"results, pictures and logs in {out}/ (summary.json first)", file=sys.stderr)
    return 0
