"""``python -m nanolens_tem``: the TEM particle-sizing gRPC service (settings from NANOLENS_* variables)."""

from nanolens_runtime.app import run_model_service
from nanolens_tem.service import TEM, TemPipeline, servicer


def main() -> None:
    run_model_service(TEM, lambda registry, pool, settings: [servicer(TemPipeline(registry, pool))])


if __name__ == "__main__":
    main()
