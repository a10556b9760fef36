"""Model bundles shipped with the spectra service (built by ``make models``)."""

from pathlib import Path

BUNDLES_DIR = Path(__file__).resolve().parent
DEFAULT_BUNDLE_NAME = "swcnt-endosome"
DEFAULT_BUNDLE_VERSION = "1"


def default_bundle_path() -> Path:
    """Directory of the default DNA-SWCNT endosome classifier (model.onnx + manifest.json)."""
    return BUNDLES_DIR / DEFAULT_BUNDLE_NAME / DEFAULT_BUNDLE_VERSION
