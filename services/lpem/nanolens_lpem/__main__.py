"""``python -m nanolens_lpem``: the liquid-phase EM gRPC service (settings from NANOLENS_* variables)."""

from nanolens_lpem.service import LPEM, LpemPipeline, servicer
from nanolens_runtime.app import run_model_service


def main() -> None:
    run_model_service(LPEM, lambda registry, pool, settings: [servicer(LpemPipeline(registry, pool))])


if __name__ == "__main__":
    main()
