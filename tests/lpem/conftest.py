"""Shared fixtures for the LPEM tests."""

import sys
from pathlib import Path

try:  # the editable install may predate the package; fall back to the source root
    import nanolens_lpem  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "services" / "lpem"))
