"""Does a classifier head say when an image is unlike every class it knows? Measured on real images.

``python -m nanolens_sem.evaluation.novelty [--bundle DIR] [--per-image N] [--out FILE.json]``

A head is trained as ``nanolens sem train`` trains one (``training.heads``: logistic regression,
novelty threshold calibrated on its grouped cross-validation) on 256 x 256 crops of two thirds of
the lung-cell SEM images (5 classes). Then its ``ood_score`` (cosine distance to the nearest
training embedding over the threshold; above 1: unlike every class) is read on

- **in domain**: crops of the held-out third of the lung-cell images (new images of known
  classes; every third image of each class, sorted by name);
- **foreign**: crops of other real micrographs: TEM of carbon black (Frei & Kruis), of gold
  tetrahedra and nanoprisms (Chen lab) and of soot (SAGE), SEM of GaAs nanowires (DeepSEM), of
  metal powder (AMPIS) and of steel (UHCS), and seeded uniform noise.

Reported: the share of each set flagged, the pooled share of foreign crops flagged and of
in-domain crops flagged, and the AUROC of the score between the two. ``--per-image`` caps the
crops taken from one image (seeded choice) to bound the run time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CROP = 256
SEED = 0
PER_IMAGE = 6
NOISE = 40
HOLD_OUT_EVERY = 3


def crops_of(image: np.ndarray, per_image: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Up to ``per_image`` non-overlapping CROP x CROP crops (a seeded choice among all of them)."""
    h, w = image.shape
    corners = [(r, c) for r in range(0, h - CROP + 1, CROP) for c in range(0, w - CROP + 1, CROP)]
    chosen = rng.permutation(len(corners))[:per_image]
    return [image[corners[i][0]:corners[i][0] + CROP, corners[i][1]:corners[i][1] + CROP] for i in sorted(chosen)]


def grey_image(path: Path) -> np.ndarray:
    """An evaluation image as one greyscale plane (the first channel of a colour TIFF)."""
    from nanolens_sem.evaluation.data import read_grey

    if path.suffix.lower() not in (".tif", ".tiff"):
        return read_grey(path)
    import tifffile

    image = tifffile.imread(path)
    return image[..., 0] if image.ndim == 3 else image


def foreign_images(data: Path) -> dict[str, list[Path]]:
    """Set name -> image files of the real micrographs that are not lung cells."""
    globs = {
        "TEM carbon black": "tem/frei_carbonblack_testimages/test_images/*.png",
        "TEM gold": "tem/chenlab_au_tetrahedra_nanoprisms/*/image/*.tif",
        "TEM soot": "tem/sage_soot_tem/images/*",
        "SEM GaAs nanowires": "sem/deepsem_gaas_nanowires/*.png",
        "SEM metal powder": "sem/ampis_powder_sem/images/*",
        "SEM steel": "sem/uhcs_spheroidite_sem/images/*",
    }
    return {name: sorted(data.glob(pattern)) for name, pattern in globs.items()}


def lungcell_split(root: Path, per_image: int, rng: np.random.Generator):
    """(train crops, labels, groups), (held-out crops): every HOLD_OUT_EVERY-th image of a class held out."""
    from nanolens_micrographs import detect_info_bar
    from nanolens_sem.evaluation import data

    train, labels, groups, held = [], [], [], []
    by_class: dict[str, list] = {}
    for item in data.lungcell_images(root):
        by_class.setdefault(item.label, []).append(item)
    for label, items in sorted(by_class.items()):
        for i, item in enumerate(items):
            image = data.read_grey(item.path)
            image = image[:image.shape[0] - detect_info_bar(image)]
            crops = crops_of(image, per_image, rng)
            if i % HOLD_OUT_EVERY == HOLD_OUT_EVERY - 1:
                held += crops
            else:
                train += crops
                labels += [label] * len(crops)
                groups += [item.path.name] * len(crops)
    return (train, np.array(labels), np.array(groups)), held


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """P(positive score > negative score), ties counting half."""
    neg, pos = np.sort(np.asarray(negative, float)), np.asarray(positive, float)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below + 0.5 * ties).sum() / (neg.size * pos.size))


def evaluate(embedder, data: Path, per_image: int = PER_IMAGE, seed: int = SEED) -> dict:
    from nanolens_sem.training.heads import calibrate_novelty, cross_validate, nearest_distance

    rng = np.random.default_rng(seed)
    embed = lambda crops: np.concatenate([embedder.embed(c, keep_info_bar=True) for c in crops])  # noqa: E731
    (train, labels, groups), held = lungcell_split(data / "sem", per_image, rng)
    features = embed(train)
    cv = cross_validate(features, labels, groups)
    novelty = calibrate_novelty(cv.held_out_distance, "lung-cell training crops")
    score = lambda crops: nearest_distance(embed(crops), features) / novelty["threshold"]  # noqa: E731
    in_domain = score(held)
    sets = {}
    for name, paths in foreign_images(data).items():
        crops = [c for p in paths for c in crops_of(grey_image(p), per_image, rng)]
        if crops:
            sets[name] = score(crops)
    sets["uniform noise"] = score([(rng.random((CROP, CROP)) * 255).astype(np.uint8) for _ in range(NOISE)])
    foreign = np.concatenate(list(sets.values()))
    return {
        "head": {"classes": sorted(set(labels.tolist())), "n_train_crops": int(len(labels)),
                 "n_train_images": int(len(set(groups.tolist()))), "cv_accuracy": round(cv.accuracy, 4),
                 "threshold": novelty["threshold"], "false_positive_rate": novelty["false_positive_rate"]},
        "in_domain": {"n": int(in_domain.size), "flagged": int((in_domain > 1).sum())},
        "sets": [{"set": k, "n": int(v.size), "flagged": int((v > 1).sum()),
                  "median_score": round(float(np.median(v)), 3)} for k, v in sets.items()],
        "auroc": round(auroc(in_domain, foreign), 4),
        "foreign_flagged": round(float((foreign > 1).mean()), 4),
        "in_domain_flagged": round(float((in_domain > 1).mean()), 4),
        "n_foreign": int(foreign.size), "per_image": per_image, "seed": seed,
    }


def format_table(result: dict) -> str:
    lines = ["| crops | N | flagged | median score |", "|---|---|---|---|"]
    d = result["in_domain"]
    lines.append(f"| held-out lung-cell images (in domain) | {d['n']} | {d['flagged']} | |")
    lines += [f"| {s['set']} | {s['n']} | {s['flagged']} | {s['median_score']:g} |" for s in result["sets"]]
    lines += ["", f"AUROC {result['auroc']:.4f}; foreign flagged {100 * result['foreign_flagged']:.1f} % of "
              f"{result['n_foreign']}; in domain flagged {100 * result['in_domain_flagged']:.1f} % of {d['n']}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    from nanolens_sem.evaluation import data
    from nanolens_sem.training.heads import Embedder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=None, help="autoencoder bundle (default: the shipped one)")
    ap.add_argument("--per-image", type=int, default=PER_IMAGE, help="crops taken from one image at most")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if data.sem_root() is None:
        raise SystemExit("no SEM evaluation data: set NANOLENS_DATA (see nanolens_sem/evaluation/data.py)")
    result = evaluate(Embedder.load(args.bundle), data.data_root(), args.per_image)
    print(format_table(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
