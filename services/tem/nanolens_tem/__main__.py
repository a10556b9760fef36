"""``python -m nanolens_tem``: the TEM particle-sizing gRPC service (settings from NANOLENS_* variables)."""

from nanolens_runtime.app import run_model_service
from nanolens_tem.service import CNN_MODEL, SERVICE, SHIPPED_BUNDLES, TASKS, TemPipeline, servicer


def main() -> None:
    run_model_service(SERVICE, TASKS, CNN_MODEL, SHIPPED_BUNDLES,
                      lambda registry, pool, settings: [servicer(TemPipeline(registry, pool))])


if __name__ == "__main__":
    main()
