"""Is the autoencoder's embedding useful? k-nearest-neighbour accuracy and a logistic head on two
labelled real sets, with folds grouped by source image, against raw downsampled pixels and a
texture baseline (local binary patterns) on the same folds.

``python -m nanolens_sem.evaluation.embeddings [--bundle DIR] [--pretrained DIR] [--out FILE.json]``

``--pretrained``: an EfficientNet-Lite0 bundle (``python -m nanolens_sem.training.efficientnet``),
evaluated on the same folds as a fourth feature set. ``fusion``: every set side by side, each
given the same say in the k-NN distance (columns standardised, then weighted by 1 / sqrt of their
set's width).

Sets (``NANOLENS_DATA/sem``, see ``data.py``):

- lung cells, 5 classes: 256 x 256 crops of the 35 images (information bar removed), grouped by
  image;
- DeepSEM boxes: nanowire / parasitic / nanospade crops cut from the labelled boxes (with a 25 %
  margin, at least 32 px) of the 7 source images the autoencoder did not train on, grouped by
  source image.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CROP = 256
BOX_MIN = 32
PIXELS_SIDE = 16  # raw-pixel baseline: the crop area-averaged to 16 x 16
K = 5


def lungcell_crops(root: Path):
    """(crops uint, labels, groups) of every lung-cell image."""
    from nanolens_micrographs import detect_info_bar
    from nanolens_sem.evaluation import data

    crops, labels, groups = [], [], []
    for item in data.lungcell_images(root):
        img = data.read_grey(item.path)
        img = img[:img.shape[0] - detect_info_bar(img)]
        for r in range(0, img.shape[0] - CROP + 1, CROP):
            for c in range(0, img.shape[1] - CROP + 1, CROP):
                crops.append(img[r:r + CROP, c:c + CROP])
                labels.append(item.label)
                groups.append(item.path.name)
    return crops, np.array(labels), np.array(groups)


def deepsem_box_crops(root: Path):
    """(crops, labels, groups) of the labelled DeepSEM boxes."""
    from nanolens_sem.evaluation import data

    cache: dict[Path, np.ndarray] = {}
    crops, labels, groups = [], [], []
    for path, label, (top, left, height, width) in data.deepsem_boxes(root):
        img = cache.setdefault(path, data.read_grey(path))
        side = max(BOX_MIN, int(1.25 * max(height, width)))
        cy, cx = top + height / 2, left + width / 2
        r0 = int(np.clip(round(cy - side / 2), 0, max(img.shape[0] - side, 0)))
        c0 = int(np.clip(round(cx - side / 2), 0, max(img.shape[1] - side, 0)))
        crop = img[r0:r0 + side, c0:c0 + side]
        if min(crop.shape) < 16:
            continue
        if data.source_of(path) in data.TRAIN_SOURCES:  # the autoencoder saw these images
            continue
        crops.append(crop)
        labels.append(label)
        groups.append(data.source_of(path))
    return crops, np.array(labels), np.array(groups)


def pixel_features(crops) -> np.ndarray:
    from nanolens_sem.science.images import area_resize, normalise

    return np.stack([area_resize(normalise(c), (PIXELS_SIDE, PIXELS_SIDE)).ravel() for c in crops])


def lbp_features(crops) -> np.ndarray:
    """Uniform LBP histograms at radii 1, 2 and 3 (8, 16, 24 points), concatenated."""
    from skimage.feature import local_binary_pattern

    from nanolens_sem.science.images import normalise

    feats = []
    for c in crops:
        img = (normalise(c) * 255).astype(np.uint8)
        parts = []
        for p, r in ((8, 1), (16, 2), (24, 3)):
            codes = local_binary_pattern(img, p, r, "uniform")
            parts.append(np.bincount(codes.astype(int).ravel(), minlength=p + 2) / codes.size)
        feats.append(np.concatenate(parts))
    return np.stack(feats)


def ae_features(crops, embedder) -> np.ndarray:
    return np.concatenate([embedder.embed(c, keep_info_bar=True) for c in crops])


def pretrained_features(crops, bundle_dir: Path, batch: int = 32) -> np.ndarray:
    """ImageNet EfficientNet-Lite0 embeddings of the crops, each resized to the graph's side."""
    import onnxruntime as ort
    from PIL import Image

    from nanolens_runtime.bundles import ModelBundle
    from nanolens_sem.science.images import normalise

    bundle = ModelBundle.load(bundle_dir)
    side = int(bundle.manifest["preprocessing"]["side"])
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    x = np.stack([np.asarray(Image.fromarray(normalise(c)).resize((side, side), Image.BILINEAR), np.float32)
                  for c in crops])[:, None]
    return np.concatenate([session.run(["embedding"], {"image": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def knn(metric: str = "cosine", weights: np.ndarray | None = None):
    """k-NN on standardised features; ``weights`` scale the columns after standardising."""
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    scale = [] if weights is None else [FunctionTransformer(lambda x: x * weights)]
    return lambda: make_pipeline(StandardScaler(), *scale, KNeighborsClassifier(K, metric=metric))


def fusion(features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Every feature set side by side, and the column weights (1 / sqrt of its set's width) that
    give each set the same say in a distance once the columns are standardised."""
    weights = np.concatenate([np.full(f.shape[1], 1 / np.sqrt(f.shape[1])) for f in features.values()])
    return np.concatenate(list(features.values()), axis=1), weights


def evaluate_set(name: str, crops, labels, groups, embedder, pretrained: Path | None = None) -> dict:
    from nanolens_sem.training.heads import cross_validate, logistic

    features = {"autoencoder": ae_features(crops, embedder), "pixels": pixel_features(crops),
                "lbp": lbp_features(crops)}
    if pretrained is not None:
        features["efficientnet"] = pretrained_features(crops, pretrained)
    out = {"set": name, "n_items": int(len(labels)), "n_groups": int(len(set(groups.tolist()))),
           "classes": {c: int((labels == c).sum()) for c in sorted(set(labels.tolist()))}, "knn_k": K}
    fused, weights = fusion(features)
    features["fusion"] = fused
    for fname, f in features.items():
        for method, make in (("knn", knn(weights=weights if fname == "fusion" else None)), ("logistic", logistic)):
            cv = cross_validate(f, labels, groups, make)
            out[f"{method}_{fname}_accuracy"] = cv.accuracy
            out[f"{method}_{fname}_balanced_accuracy"] = cv.balanced_accuracy
            out["n_folds"] = cv.n_folds
    return out


def main(argv=None) -> int:
    from nanolens_sem.evaluation import data
    from nanolens_sem.training.heads import Embedder

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bundle", type=Path, default=None, help="autoencoder bundle (default: the shipped one)")
    ap.add_argument("--pretrained", type=Path, default=None, help="EfficientNet-Lite0 bundle to compare")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    root = data.sem_root()
    if root is None:
        raise SystemExit("no SEM evaluation data: set NANOLENS_DATA (see nanolens_sem/evaluation/data.py)")
    embedder = Embedder.load(args.bundle)
    results = [evaluate_set("lung cells (5 classes)", *lungcell_crops(root), embedder, args.pretrained),
               evaluate_set("DeepSEM boxes (3 classes)", *deepsem_box_crops(root), embedder, args.pretrained)]
    text = json.dumps({"model": embedder.bundle.manifest["name"], "version": embedder.bundle.manifest["version"],
                       "sha256": embedder.bundle.sha256, "sets": results}, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
