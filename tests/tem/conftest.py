"""Shared fixtures for the TEM science tests."""

import sys
from pathlib import Path

import pytest

try:  # the editable install may predate the package; fall back to the source root
    import nanolens_tem  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "tem"))

try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture(scope="session")
def gold_data():
    """Real gold masks, or a skip saying why (the data never enters the repository)."""
    from nanolens_tem.evaluation.data import gold_dir, gold_items

    if not gold_dir().is_dir():
        pytest.skip(f"real data not found at {gold_dir()} (set NANOLENS_DATA to ../shared/data)")
    return gold_items()
