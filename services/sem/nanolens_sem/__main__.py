"""``python -m nanolens_sem``: the SEM autoencoder gRPC service (settings from NANOLENS_* variables)."""

from nanolens_runtime.app import run_model_service
from nanolens_sem.service import SEM, SemPipeline, servicer


def main() -> None:
    run_model_service(SEM, lambda registry, pool, settings: [servicer(SemPipeline(registry, pool))])


if __name__ == "__main__":
    main()
