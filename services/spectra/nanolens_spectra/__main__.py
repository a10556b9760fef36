"""``python -m nanolens_spectra``: the spectra gRPC service (settings from NANOLENS_* variables)."""

from nanolens_runtime.app import run_model_service
from nanolens_spectra.service import SPECTRA, SpectraPipeline, servicer


def main() -> None:
    run_model_service(SPECTRA, lambda registry, pool, settings: [servicer(SpectraPipeline(registry, pool, settings))])


if __name__ == "__main__":
    main()
