"""Readers of the public measured spectra (never part of the repository).

``NANOLENS_DATA`` points at the shared data folder; the default is ``<repo>/../shared/data``.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[4]  # services/spectra/nanolens_spectra/evaluation/data.py
RAMANBIOLIB_DIR = "spectra/ramanbiolib_1.0.0.post5"
CHEMOTOOLS_DIR = "spectra/chemotools_0.5.0_coffee_fermentation"
RAMPY_DIR = "spectra/rampy_morb_glass"


def data_root() -> Path:
    """The shared data folder (``$NANOLENS_DATA`` or ``<repo>/../shared/data``)."""
    env = os.environ.get("NANOLENS_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data").resolve()


@dataclass(frozen=True)
class Spectra:
    """Spectra (N, C) on one axis (C,), with an identifier per spectrum."""

    spectra: np.ndarray
    axis: np.ndarray
    ids: tuple[str, ...]


def read_ramanbiolib(data_dir: Path) -> tuple[Spectra, list[dict[str, str]]]:
    """The 202 ramanbiolib 1.0.0.post5 spectra (450-1800 cm^-1) and each one's metadata row."""
    base = Path(data_dir) / RAMANBIOLIB_DIR
    with open(base / "metadata_db.csv", newline="") as fh:
        meta = {row["id"]: row for row in csv.DictReader(fh)}
    csv.field_size_limit(1 << 27)  # each row holds two JSON lists of ~1351 numbers
    axis, spectra, ids = None, [], []
    with open(base / "raman_spectra_db.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            x = np.asarray(json.loads(row["wavenumbers"]), dtype=np.float64)
            if axis is None:
                axis = x
            elif not np.array_equal(axis, x):
                raise ValueError(f"ramanbiolib spectrum {row['id']} has a different axis")
            spectra.append(np.asarray(json.loads(row["intensity"]), dtype=np.float32))
            ids.append(row["id"])
    return Spectra(np.stack(spectra), axis, tuple(ids)), [meta[i] for i in ids]


def read_matrix_csv(path: Path, every: int = 1) -> Spectra:
    """A chemotools-style CSV: a header row of axis values, then one spectrum per row (every
    ``every``-th row kept)."""
    with open(path, newline="") as fh:
        rows = csv.reader(fh)
        axis = np.asarray(next(rows), dtype=np.float64)
        kept = [(i, row) for i, row in enumerate(rows) if i % every == 0]
    spectra = np.asarray([row for _, row in kept], dtype=np.float32)
    return Spectra(spectra, axis, tuple(f"{Path(path).stem}:{i}" for i, _ in kept))


def read_rampy_glasses(data_dir: Path) -> list[Spectra]:
    """The 304 raw rampy MORB glass spectra (25-1500 cm^-1), one Spectra each: every file has
    its own axis."""
    out = []
    for path in sorted((Path(data_dir) / RAMPY_DIR / "raw").glob("*.txt")):
        table = np.loadtxt(path)
        out.append(Spectra(table[None, :, 1].astype(np.float32), table[:, 0], (path.stem,)))
    return out
