"""``python -m nanolens_spectra``: the spectra gRPC service (settings from NANOLENS_* variables)."""

from nanolens_runtime.app import run_model_service
from nanolens_spectra.service import DEFAULT_MODEL, SERVICE, SHIPPED_BUNDLES, TASK, SpectraPipeline, servicer


def main() -> None:
    run_model_service(SERVICE, TASK, DEFAULT_MODEL, SHIPPED_BUNDLES,
                      lambda registry, pool, settings: [servicer(SpectraPipeline(registry, pool, settings))])


if __name__ == "__main__":
    main()
