"""Locations of the real measured data (never part of the repository).

``NANOLENS_DATA`` points at the shared data folder; the default is ``<repo>/../shared/data``.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[4]  # services/tem/nanolens_tem/evaluation/data.py


def data_root() -> Path:
    """The shared data folder (``$NANOLENS_DATA`` or ``<repo>/../shared/data``)."""
    env = os.environ.get("NANOLENS_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


def carbon_black_dir() -> Path:
    """Frei & Kruis / Sipkens carbon-black test images (6 PNGs, no labels)."""
    return data_root() / "tem" / "frei_carbonblack_testimages" / "test_images"


def gold_dir() -> Path:
    """Chen lab gold tetrahedra / nanoprism images with manual masks."""
    return data_root() / "tem" / "chenlab_au_tetrahedra_nanoprisms"


def read_gray(path: Path) -> np.ndarray:
    """Read an image file as a 2D array (first channel of RGB/RGBA)."""
    path = Path(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        a = tifffile.imread(path)
    else:
        from PIL import Image

        a = np.asarray(Image.open(path))
    return a[..., 0] if a.ndim == 3 else a


def gold_items() -> list[tuple[str, Path, Path]]:
    """``(subset, image_path, mask_path)`` for every real gold image with a manual mask."""
    out = []
    for subset in ("tetrahedra", "nanoprisms"):
        for img in sorted((gold_dir() / subset / "image").glob("*.tif")):
            out.append((subset, img, gold_dir() / subset / "mask" / img.name))
    return out


def gold_instances(mask_path: Path, cut_bridges: int = 0) -> np.ndarray:
    """Instance labels from a manual mask: 4-connected labelling of its first channel > 127.

    The masks separate touching particles by thin background lines, but some lines have gaps,
    so plain labelling merges chains of particles into one instance (e.g. 7 tetrahedra in one
    component). ``cut_bridges=k`` erodes the mask by ``k`` px before labelling and grows the
    components back inside the mask (watershed with a flat landscape), which cuts bridges up to
    ``2k`` px wide. ``0`` is the plain definition.
    """
    from scipy import ndimage as ndi
    from skimage.measure import label
    from skimage.segmentation import watershed

    fg = read_gray(mask_path) > 127
    if cut_bridges <= 0:
        return label(fg, connectivity=1).astype(np.int32)
    seeds = label(ndi.binary_erosion(fg, iterations=cut_bridges), connectivity=1)
    return watershed(np.zeros(fg.shape), seeds, mask=fg).astype(np.int32)


@contextlib.contextmanager
def row_cache(out: Path) -> Iterator[tuple[dict[str, dict], Callable[[dict], None]]]:
    """The rows an evaluation already wrote to ``out/rows.jsonl``, by their ``id``, and a function
    that records a new one (appended and flushed at once, so an interrupted run resumes where it
    stopped)."""
    path = out / "rows.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    done = {}
    if path.exists():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            done[row["id"]] = row
    with path.open("a") as f:
        def record(row: dict) -> None:
            done[row["id"]] = row
            f.write(json.dumps(row) + "\n")
            f.flush()

        yield done, record
