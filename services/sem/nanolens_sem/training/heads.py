"""Classifier heads on an autoencoder's embeddings: cross-validated grouped by source image,
fitted, exported as a small ONNX graph (standardisation folded into one Gemm, then Softmax) and
written as a bundle of task ``sem-classifier`` tied to the autoencoder that made the embeddings.

The graph also says when an image is unlike every class: ``ood_score`` is the cosine distance of
the embedding to its nearest training embedding (all of them are in the graph) divided by a
threshold, the ``1 - NOVELTY_FALSE_POSITIVE_RATE`` quantile of the same distance for the
cross-validation's held-out items (each against the training folds that did not hold it, so a
held-out image is a new image of a known class). Above 1: unlike every class, the label is a guess.

Used by ``nanolens sem train FOLDER --name N --version V [--register]`` and by the evaluation.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nanolens_runtime.bundles import ModelBundle, write_bundle

TASK = "sem-classifier"
#: Share of new images of known classes that the novelty score flags, by its calibration.
NOVELTY_FALSE_POSITIVE_RATE = 0.02
NOVELTY_METHOD = ("cosine distance of the embedding to its nearest training embedding / threshold (the "
                  "held-out quantile); above 1: unlike every class")


@dataclass
class Embedder:
    """An autoencoder bundle with its session: embeddings of whole images or of their tiles."""

    bundle: ModelBundle
    session: object

    @classmethod
    def load(cls, path: Path | None = None) -> Embedder:
        import onnxruntime as ort

        from nanolens_sem.bundles import latest_bundle

        bundle = ModelBundle.load(path or latest_bundle("sem-autoencoder"))
        return cls(bundle, ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"]))

    def embed(self, image: np.ndarray, tile: int = 0, keep_info_bar: bool = False) -> np.ndarray:
        """N x D embeddings: one of the whole image (``tile`` 0) or one per ``tile`` x ``tile``
        window (non-overlapping, the edge remainder left out)."""
        from nanolens_sem.science.images import prepare
        from nanolens_sem.science.lens import run_windows
        from nanolens_sem.service import embedding_spec

        man = self.bundle.manifest
        kept, _, scale = prepare(image, tuple(man["preprocessing"]["percentiles"]), keep_info_bar)
        layers, standardise = embedding_spec(man)
        if tile <= 0 or min(kept.shape) < tile:
            return run_windows(self.session, kept, (), 512, 16, None, layers, standardise, scale).embedding[None]
        h, w = kept.shape
        return np.stack([run_windows(self.session, kept[r:r + tile, c:c + tile], (), 512, 16, None, layers,
                                     standardise, scale).embedding
                         for r in range(0, h - tile + 1, tile) for c in range(0, w - tile + 1, tile)])


def grouped_folds(labels: np.ndarray, groups: np.ndarray, n_splits: int = 5, seed: int = 0):
    """Stratified folds that keep each source image in one fold (fewer when groups are few)."""
    from sklearn.model_selection import StratifiedGroupKFold

    per_class = min(len(set(groups[labels == c])) for c in np.unique(labels))
    splits = max(2, min(n_splits, per_class))
    return list(StratifiedGroupKFold(splits, shuffle=True, random_state=seed).split(labels, labels, groups))


def logistic(C: float = 1.0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=5000))


@dataclass
class CrossValidation:
    classes: list[str]
    accuracy: float
    balanced_accuracy: float
    precision: dict[str, float]
    recall: dict[str, float]
    confusion: np.ndarray  # true x predicted counts
    n_items: int
    n_groups: int
    n_folds: int
    # Cosine distance of each item to its nearest embedding in the training folds that held it out.
    held_out_distance: np.ndarray


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_distance(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Cosine distance (1 - cosine similarity) of each query row to its nearest reference row."""
    return 1.0 - (unit_rows(queries) @ unit_rows(reference).T).max(axis=1)


def cross_validate(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, make=logistic,
                   seed: int = 0) -> CrossValidation:
    """Out-of-fold predictions of ``make()`` with folds grouped by source image."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, precision_recall_fscore_support

    classes = sorted(set(labels.tolist()))
    predicted = np.empty(len(labels), dtype=object)
    distance = np.empty(len(labels))
    folds = grouped_folds(labels, groups, seed=seed)
    for train, test in folds:
        predicted[test] = make().fit(features[train], labels[train]).predict(features[test])
        distance[test] = nearest_distance(features[test], features[train])
    p, r, _, _ = precision_recall_fscore_support(labels, predicted.astype(str), labels=classes, zero_division=0)
    return CrossValidation(classes, float((predicted == labels).mean()),
                           float(balanced_accuracy_score(labels, predicted.astype(str))),
                           dict(zip(classes, p.tolist(), strict=True)), dict(zip(classes, r.tolist(), strict=True)),
                           confusion_matrix(labels, predicted.astype(str), labels=classes), len(labels),
                           len(set(groups.tolist())), len(folds), distance)


def calibrate_novelty(held_out_distance: np.ndarray, source: str,
                      false_positive_rate: float = NOVELTY_FALSE_POSITIVE_RATE) -> dict:
    """The manifest's ``out_of_domain`` block from held-out nearest-neighbour distances."""
    d = np.asarray(held_out_distance, np.float64)
    if d.size < 10 or not np.isfinite(d).all():
        raise ValueError(f"the novelty calibration needs at least 10 finite held-out distances, got {d.size}")
    threshold = float(np.quantile(d, 1.0 - false_positive_rate))
    if threshold <= 0:
        raise ValueError("held-out images are identical to training images: no novelty threshold can be set")
    return {"method": NOVELTY_METHOD, "output": "ood_score", "threshold": round(threshold, 8),
            "false_positive_rate": false_positive_rate,
            "calibration": {"source": source, "n_items": int(d.size), "flagged": int((d > threshold).sum())}}


def head_onnx(pipeline, dim: int, reference: np.ndarray, threshold: float) -> bytes:
    """The fitted StandardScaler + LogisticRegression as Gemm + Softmax (scaling folded in), and
    the novelty score: cosine distance to the nearest of the ``reference`` embeddings / ``threshold``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    scaler, lr = pipeline[0], pipeline[-1]
    coef = lr.coef_ / scaler.scale_[None]
    bias = lr.intercept_ - coef @ scaler.mean_
    if coef.shape[0] == 1:  # binary: the two classes' logits are -z/2 and z/2
        coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    constants = {"W": coef, "b": bias, "R": unit_rows(reference).T, "eps": np.array([1e-12]),
                 "one": np.array([1.0]), "threshold": np.array([threshold])}
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["embedding", "W", "b"], ["logits"], transB=1),
         helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
         helper.make_node("ReduceL2", ["embedding"], ["norm"], axes=[1], keepdims=1),
         helper.make_node("Max", ["norm", "eps"], ["safe_norm"]),
         helper.make_node("Div", ["embedding", "safe_norm"], ["unit"]),
         helper.make_node("MatMul", ["unit", "R"], ["similarity"]),
         helper.make_node("ReduceMax", ["similarity"], ["nearest"], axes=[1], keepdims=0),
         helper.make_node("Sub", ["one", "nearest"], ["distance"]),
         helper.make_node("Div", ["distance", "threshold"], ["ood_score"])],
        "sem_head",
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", coef.shape[0]]),
         helper.make_tensor_value_info("ood_score", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in constants.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="nanolens")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def train_head(features: np.ndarray, labels: np.ndarray, groups: np.ndarray, embedder: Embedder, name: str,
               version: str, out_dir: Path, source: str, C: float = 1.0) -> tuple[Path, CrossValidation]:
    """Cross-validate, fit on everything, write the bundle; returns its folder and the report."""
    import sklearn

    labels = np.asarray(labels).astype(str)
    if len(set(labels.tolist())) < 2:
        raise ValueError(f"a classifier needs at least two classes, got {sorted(set(labels.tolist()))}")
    cv = cross_validate(features, labels, groups, lambda: logistic(C))
    novelty = calibrate_novelty(cv.held_out_distance, f"held-out items of the grouped {cv.n_folds}-fold "
                                f"cross-validation ({cv.n_groups} source images), each against the folds that "
                                f"did not hold it")
    fitted = logistic(C).fit(features, labels)
    classes = [str(c) for c in fitted[-1].classes_]
    digest = hashlib.sha256(np.ascontiguousarray(features, np.float32).tobytes())
    digest.update("\n".join(labels.tolist()).encode())
    ae = embedder.bundle.manifest
    manifest = {
        "schema_version": 1, "name": name, "version": version, "task": TASK,
        "description": f"logistic regression on the embeddings of {ae['name']} {ae['version']} "
                       f"({len(classes)} classes)",
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "inputs": [{"name": "embedding", "dtype": "float32", "shape": ["batch", int(features.shape[1])]}],
        "outputs": [{"name": "probabilities", "dtype": "float32", "shape": ["batch", len(classes)]},
                    {"name": "ood_score", "dtype": "float32", "shape": ["batch"]}],
        "out_of_domain": {**novelty, "n_reference": int(len(features))},
        "class_names": classes,
        "embedding_model": {"name": ae["name"], "version": ae["version"], "sha256": embedder.bundle.sha256},
        "preprocessing": {"input": "the embedding of the autoencoder named in embedding_model"},
        "metrics": {"cv_accuracy": cv.accuracy, "cv_balanced_accuracy": cv.balanced_accuracy,
                    "cv_n_items": float(cv.n_items), "cv_n_groups": float(cv.n_groups), "cv_n_folds": float(cv.n_folds),
                    **{f"cv_precision_{c}": v for c, v in cv.precision.items()},
                    **{f"cv_recall_{c}": v for c, v in cv.recall.items()}},
        "training_data": {"sha256": digest.hexdigest(), "n_items": int(len(labels)), "source": source},
        "framework": {"scikit-learn": sklearn.__version__, "model": f"StandardScaler + LogisticRegression(C={C})"},
    }
    graph = head_onnx(fitted, features.shape[1], features, novelty["threshold"])
    return write_bundle(out_dir, graph, manifest), cv


def confusion_figure(cv: CrossValidation, path: Path, title: str = "") -> Path:
    """The cross-validated confusion matrix as a PNG (counts, rows true, columns predicted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(cv.classes)
    fig, ax = plt.subplots(figsize=(1.2 * n + 2.5, 1.0 * n + 2))
    im = ax.imshow(cv.confusion, cmap="Blues")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(cv.confusion[i, j]), ha="center", va="center",
                    color="white" if cv.confusion[i, j] > cv.confusion.max() / 2 else "black")
    ax.set_xticks(range(n), cv.classes, rotation=35, ha="right")
    ax.set_yticks(range(n), cv.classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"grouped {cv.n_folds}-fold CV: accuracy {cv.accuracy:.3f} ({cv.n_items} items, "
                          f"{cv.n_groups} source images)", fontsize=9)
    fig.colorbar(im, ax=ax, label="items")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
