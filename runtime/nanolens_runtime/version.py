"""The version every NanoLens process reports (build info, provenance)."""

from importlib.metadata import PackageNotFoundError, version

try:
    SERVICE_VERSION = version("nanolens")
except PackageNotFoundError:  # running from a source tree without installation
    SERVICE_VERSION = "0+unknown"
