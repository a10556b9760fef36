"""When does a collection search find nothing like the query? A similarity calibrated on real images.

``python -m nanolens_sem.evaluation.search [--bundle DIR] [--write] [--out FILE.json]``

Whole images are embedded as ``nanolens analyze sem IMAGE --embed`` embeds them. The collection
holds the SEM images the project has of two kinds: the 35 lung-cell images and the 90 DeepSEM
nanowire tiles. A query of the same kind should find something; its best similarity is taken
against the collection without the query's own source (the image itself; for a DeepSEM tile,
every tile of its source image), so that a near-copy does not count.

- **Calibration**: every other image of each kind (sorted; lung cells per class, DeepSEM tiles
  by source) gives its best similarity; ``similar_above`` is their ``FALSE_NOTHING`` quantile,
  so that about 5 % of such queries would be told "nothing similar".
- **Measured** on the other half (in domain: share wrongly told "nothing similar") and on foreign
  queries against the whole collection (TEM of carbon black, gold and soot; SEM of metal powder
  and steel; seeded noise: share told "nothing similar"), with the AUROC of the best similarity.

``--write`` stores the threshold in the bundle's manifest (``metrics.search_similar_above``, with
its calibration under ``search_calibration``), where the gateway reads it (ModelInfo.metrics).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FALSE_NOTHING = 0.05
METRIC = "search_similar_above"
NOISE = 20
SEED = 0


def _images(data: Path) -> dict[str, list[tuple[str, Path]]]:
    """Kind -> (group, path): in-domain kinds first (lung cells grouped by image, DeepSEM tiles by source)."""
    from nanolens_sem.evaluation import data as sem_data

    root = data / "sem"
    globs = {"TEM carbon black": "tem/frei_carbonblack_testimages/test_images/*.png",
             "TEM gold": "tem/chenlab_au_tetrahedra_nanoprisms/*/image/*.tif",
             "TEM soot": "tem/sage_soot_tem/images/*", "SEM metal powder": "sem/ampis_powder_sem/images/*",
             "SEM steel": "sem/uhcs_spheroidite_sem/images/*"}
    return {"lung cells": [(f"{i.label}/{i.path.name}", i.path) for i in sem_data.lungcell_images(root)],
            "DeepSEM tiles": [(i.group, i.path) for i in sem_data.deepsem_tiles(root)],
            **{k: [(p.name, p) for p in sorted(data.glob(g))] for k, g in globs.items()}}


IN_DOMAIN = ("lung cells", "DeepSEM tiles")


def _read(path: Path) -> np.ndarray:
    from nanolens_sem.evaluation.novelty import grey_image

    return grey_image(path)


def best_similarity(queries: np.ndarray, collection: np.ndarray, same: np.ndarray | None = None) -> np.ndarray:
    """Each query's highest cosine similarity in the collection (rows L2-normalised), leaving out
    the pairs where ``same`` (queries x collection, bool) is true."""
    s = queries @ collection.T
    if same is not None:
        s = np.where(same, -np.inf, s)
    return s.max(axis=1)


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    from nanolens_sem.evaluation.novelty import auroc as pairs

    return pairs(negative, positive)


def evaluate(embedder, data: Path, seed: int = SEED) -> dict:
    from nanolens_sem.training.heads import unit_rows

    rng = np.random.default_rng(seed)
    kinds = _images(data)
    embed = lambda image: unit_rows(embedder.embed(image))[0]  # noqa: E731 - as the gateway stores it
    vectors = {k: np.stack([embed(_read(p)) for _, p in items]) for k, items in kinds.items() if items}
    vectors["noise"] = np.stack([embed((rng.random((512, 512)) * 255).astype(np.uint8)) for _ in range(NOISE)])
    collection = np.concatenate([vectors[k] for k in IN_DOMAIN])
    groups = np.array([f"{k}:{g}" for k in IN_DOMAIN for g, _ in kinds[k]])
    # every other group of each kind calibrates, the rest measures
    calibrating = np.zeros(len(groups), bool)
    for k in IN_DOMAIN:
        names = sorted({g for g in groups if g.startswith(f"{k}:")}, key=lambda g: (g.split("/")[0], g))
        first = set(names[::2])
        calibrating |= np.isin(groups, list(first))
    best = best_similarity(collection, collection, groups[:, None] == groups[None, :])
    threshold = float(np.quantile(best[calibrating], FALSE_NOTHING))
    in_domain = best[~calibrating]
    foreign = {k: best_similarity(v, collection) for k, v in vectors.items() if k not in IN_DOMAIN}
    pooled = np.concatenate(list(foreign.values()))
    return {
        "similar_above": round(threshold, 4),
        "calibration": {"n_queries": int(calibrating.sum()), "false_nothing": FALSE_NOTHING,
                        "collection": f"{len(collection)} whole images: " + ", ".join(
                            f"{k} {len(vectors[k])}" for k in IN_DOMAIN)},
        "in_domain": {"n": int(in_domain.size), "nothing_similar": int((in_domain < threshold).sum()),
                      "median_best": round(float(np.median(in_domain)), 4)},
        "foreign": [{"set": k, "n": int(v.size), "nothing_similar": int((v < threshold).sum()),
                     "median_best": round(float(np.median(v)), 4)} for k, v in foreign.items()],
        "foreign_nothing_similar": round(float((pooled < threshold).mean()), 4),
        "in_domain_nothing_similar": round(float((in_domain < threshold).mean()), 4),
        "auroc": round(auroc(-in_domain, -pooled), 4), "n_foreign": int(pooled.size),
    }


def write_manifest(bundle_dir: Path, result: dict) -> None:
    """Store the threshold and its calibration in the autoencoder's manifest."""
    path = Path(bundle_dir) / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["metrics"][METRIC] = result["similar_above"]
    manifest["search_calibration"] = {
        "method": f"the {FALSE_NOTHING:g} quantile of the best cosine similarity of a query to a collection of its own "
                  "kind (its own source left out): below it, nothing in the collection is like the query",
        **result["calibration"], "measured": {k: result[k] for k in ("in_domain_nothing_similar",
                                                                    "foreign_nothing_similar", "auroc", "n_foreign")}}
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def format_table(result: dict) -> str:
    d = result["in_domain"]
    lines = [f"similar_above = {result['similar_above']} ({result['calibration']['n_queries']} calibration queries; "
             f"collection: {result['calibration']['collection']})", "",
             "| queries | N | told nothing similar | median best similarity |", "|---|---|---|---|",
             f"| held-out lung cells and DeepSEM tiles (in domain) | {d['n']} | {d['nothing_similar']} | "
             f"{d['median_best']:.3f} |"]
    lines += [f"| {f['set']} | {f['n']} | {f['nothing_similar']} | {f['median_best']:.3f} |" for f in result["foreign"]]
    lines += ["", f"AUROC {result['auroc']:.4f}; foreign told nothing similar "
              f"{100 * result['foreign_nothing_similar']:.1f} % of {result['n_foreign']}; in domain "
              f"{100 * result['in_domain_nothing_similar']:.1f} % of {d['n']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from nanolens_sem.bundles import latest_bundle
    from nanolens_sem.evaluation import data
    from nanolens_sem.training.heads import Embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="autoencoder bundle (default: the shipped one)")
    ap.add_argument("--write", action="store_true", help="store the threshold in the bundle's manifest")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if data.sem_root() is None:
        raise SystemExit("no SEM evaluation data: set NANOLENS_DATA (see nanolens_sem/evaluation/data.py)")
    bundle = args.bundle or latest_bundle("sem-autoencoder")
    result = evaluate(Embedder.load(bundle), data.data_root())
    print(format_table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.write:
        write_manifest(bundle, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
