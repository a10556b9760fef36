"""Labelled spectra for training: a small container and a loader for users' own files.

Accepted layouts:

* CSV, one row per spectrum: a ``label`` column plus numeric columns whose headers are the
  wavenumbers (cm^-1), e.g. ``label,400.0,401.0,...``.
* CSV of spectra only (numeric headers, no ``label`` column) plus a separate labels file:
  one label per line, optionally under a header line (the chemotools coffee layout:
  ``coffee_spectra.csv`` + ``coffee_labels.csv``). If the headers are 0, 1, 2, ... they are
  channel indices, not wavenumbers, and are used as such.
* NPZ with arrays ``spectra`` (N, C), ``labels`` (N,) (ints or strings), ``axis`` (C,) and
  optionally ``class_names`` (K,), which gives the order of classes (and the names of int
  labels).
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_COLUMN = "label"


@dataclass(frozen=True)
class LabelledDataset:
    """``spectra`` (N, C) float32 raw intensities on ``axis`` (C,) float64 cm^-1, ``labels``
    (N,) int64 indices into ``class_names``; ``source`` says where the data came from."""

    spectra: np.ndarray
    labels: np.ndarray
    axis: np.ndarray
    class_names: tuple[str, ...]
    source: str

    @property
    def n_items(self) -> int:
        return int(self.labels.size)

    def class_counts(self) -> dict[str, int]:
        counts = np.bincount(self.labels, minlength=len(self.class_names))
        return {name: int(c) for name, c in zip(self.class_names, counts, strict=True)}

    def sha256(self) -> str:
        """Hash of the training data: sha256 of the little-endian float32 spectra bytes followed
        by the little-endian int64 label bytes."""
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(self.spectra, dtype="<f4").tobytes())
        digest.update(np.ascontiguousarray(self.labels, dtype="<i8").tobytes())
        return digest.hexdigest()


def encode_labels(raw: np.ndarray, class_names: tuple[str, ...] | None = None) -> tuple[
        np.ndarray, tuple[str, ...]]:
    """Integer labels and class names from string or integer labels. Without ``class_names``,
    string classes are sorted; integer labels are named ``class_<i>``."""
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {raw.shape}")
    if np.issubdtype(raw.dtype, np.integer):
        if raw.size and raw.min() < 0:
            raise ValueError("integer labels must be >= 0")
        k = int(raw.max()) + 1 if raw.size else 0
        names = tuple(class_names) if class_names is not None else tuple(f"class_{i}" for i in range(k))
        if k > len(names):
            raise ValueError(f"label {k - 1} has no class name ({len(names)} names given)")
        return raw.astype(np.int64), names
    text = np.array([str(v).strip() for v in raw])
    if np.any(text == ""):
        raise ValueError(f"empty label in row {int(np.flatnonzero(text == '')[0])}")
    names = tuple(class_names) if class_names is not None else tuple(sorted(set(text.tolist())))
    index = {name: i for i, name in enumerate(names)}
    missing = sorted(set(text.tolist()) - index.keys())
    if missing:
        raise ValueError(f"labels not among class_names: {', '.join(missing)}")
    return np.array([index[t] for t in text], dtype=np.int64), names


def validate_dataset(ds: LabelledDataset, min_per_class: int = 10) -> LabelledDataset:
    """Raise ValueError on data that cannot be trained and cross-validated: wrong shapes,
    NaN/Inf, an axis of the wrong length, fewer than 2 classes, or a class with fewer than
    ``min_per_class`` (the number of CV folds) spectra."""
    x, y = ds.spectra, ds.labels
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] < 2:
        raise ValueError(f"spectra must be a non-empty (N, C >= 2) array, got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"{y.size} labels for {x.shape[0]} spectra")
    if ds.axis.shape != (x.shape[1],):
        raise ValueError(f"axis has {ds.axis.size} points but the spectra have {x.shape[1]} channels")
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(f"spectra contain NaN or Inf (first at spectrum {row}, channel {col})")
    counts = ds.class_counts()
    present = {k: v for k, v in counts.items() if v > 0}
    if len(present) < 2:
        raise ValueError(f"need at least 2 classes, found {len(present)}: {present}")
    small = {k: v for k, v in present.items() if v < min_per_class}
    if small:
        raise ValueError(
            f"classes with fewer than {min_per_class} spectra (one per CV fold needed): "
            + ", ".join(f"{k} ({v})" for k, v in small.items())
        )
    return ds


def _parse_float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number") from None


def _read_labels_file(path: Path) -> np.ndarray:
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)]
    if rows and len(rows[0]) == 1 and rows[0][0].strip().lower() in ("label", "labels", "class"):
        rows = rows[1:]
    if any(len(r) != 1 for r in rows):
        raise ValueError(f"{path}: expected one label per line")
    values = [r[0].strip() for r in rows]
    if values and all(v.lstrip("-").isdigit() for v in values):
        return np.array([int(v) for v in values], dtype=np.int64)
    return np.array(values)


def _load_csv(path: Path, labels_path: Path | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file")
        header = [h.strip() for h in header]
        label_col = next((i for i, h in enumerate(header) if h.lower() == LABEL_COLUMN), None)
        cols = [i for i in range(len(header)) if i != label_col]
        axis = np.array([_parse_float(header[i], f"{path} header column {i + 1}") for i in cols])
        rows, raw_labels = [], []
        for line, row in enumerate(reader, start=2):
            if not row or not any(c.strip() for c in row):
                continue
            if len(row) != len(header):
                raise ValueError(f"{path} line {line}: {len(row)} fields, header has {len(header)}")
            rows.append([_parse_float(row[i], f"{path} line {line}") for i in cols])
            if label_col is not None:
                raw_labels.append(row[label_col].strip())
    if not rows:
        raise ValueError(f"{path}: no spectra")
    spectra = np.array(rows, dtype=np.float32)
    if label_col is not None:
        labels = np.array(raw_labels)
        if all(v.lstrip("-").isdigit() for v in raw_labels):
            labels = labels.astype(np.int64)
    elif labels_path is not None:
        labels = _read_labels_file(labels_path)
    else:
        raise ValueError(f"{path}: no '{LABEL_COLUMN}' column and no labels file given")
    return spectra, labels, axis


def load_labelled_dataset(path: str | Path, labels_path: str | Path | None = None,
                          min_per_class: int = 10) -> LabelledDataset:
    """Load a user's labelled spectra (CSV or NPZ, see the module docstring) and validate them
    for ``min_per_class``-fold cross-validation. Raises ValueError naming the problem."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    class_names = None
    if path.suffix.lower() == ".npz":
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("spectra", "labels", "axis") if k not in z.files]
            if missing:
                raise ValueError(f"{path}: missing arrays {', '.join(missing)}")
            spectra = np.asarray(z["spectra"])
            labels, axis = np.asarray(z["labels"]), np.asarray(z["axis"])
            if "class_names" in z.files:
                class_names = tuple(str(c) for c in z["class_names"])
        if spectra.dtype == object or not np.issubdtype(spectra.dtype, np.number):
            raise ValueError(f"{path}: 'spectra' must be numeric, got {spectra.dtype}")
        spectra = spectra.astype(np.float32)
        axis = axis.astype(np.float64)
    elif path.suffix.lower() in (".csv", ".txt"):
        spectra, labels, axis = _load_csv(path, Path(labels_path) if labels_path else None)
    else:
        raise ValueError(f"{path}: unsupported file type (expected .csv or .npz)")
    if labels.ndim != 1 or labels.size != spectra.shape[0]:
        raise ValueError(f"{path}: {labels.size} labels for {spectra.shape[0]} spectra")
    y, names = encode_labels(labels, class_names)
    ds = LabelledDataset(spectra=spectra, labels=y, axis=axis, class_names=names, source=str(path))
    return validate_dataset(ds, min_per_class)
