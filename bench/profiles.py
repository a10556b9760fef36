"""``python -m bench.profiles [--out DIR]``: flame graphs (py-spy, SVG) of the heaviest in-process
path of each service, the same work the benchmarks time:

- spectra: a 256 x 256 map, decoded, preprocessed and classified in the gateway's block size;
- tem: the default CNN on the 2048 x 2048 benchmark image;
- lpem: segmentation and tracking of a 40-frame 512 x 512 movie.

``python -m bench.profiles --target NAME`` runs one target without profiling (what py-spy samples).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

TARGETS = ("spectra", "tem", "lpem")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "profiles"


def spectra() -> None:
    import io

    import numpy as np

    from bench.spectra import DEFAULT_MODEL, MAP_SIDE, SHIPPED_BUNDLES, in_process_map
    from nanolens_runtime.bundles import ModelBundle
    from nanolens_runtime.inference import OnnxModel
    from nanolens_spectra.science.preprocessing import PreprocessParams
    from nanolens_spectra.synthetic.swcnt import generate_map

    cube, _ = generate_map(MAP_SIDE, MAP_SIDE, seed=5)
    buffer = io.BytesIO()
    np.save(buffer, cube)
    bundle = ModelBundle.load(next(p for p in (SHIPPED_BUNDLES / DEFAULT_MODEL).iterdir() if p.is_dir()))
    model = OnnxModel(bundle, ["CPUExecutionProvider"])
    params = PreprocessParams.from_dict(bundle.manifest["preprocessing"])
    for _ in range(3):
        in_process_map(buffer.getvalue(), model, params)


def tem() -> None:
    from bench.tem import TILE, TILES, stitch, tiles
    from nanolens_runtime.inference import InferencePool, select_providers
    from nanolens_runtime.registry import ModelRegistry
    from nanolens_tem.service import CNN_MODEL, SHIPPED_BUNDLES, TASKS, TemPipeline

    registry = ModelRegistry(TASKS, CNN_MODEL, [SHIPPED_BUNDLES], select_providers("auto"))
    registry.load_all()
    pipeline = TemPipeline(registry, InferencePool())
    image = stitch(tiles(TILES * TILES))
    assert image.shape == (TILE * TILES, TILE * TILES)
    for _ in range(2):
        pipeline.segment(image, "cnn", bright=False)
    pipeline.pool.shutdown()


def lpem() -> None:
    from bench.lpem import in_process, params
    from nanolens_lpem.service import MODEL, SHIPPED_BUNDLES, TASKS
    from nanolens_lpem.synthetic.movies import generate
    from nanolens_runtime.inference import select_providers
    from nanolens_runtime.registry import ModelRegistry

    registry = ModelRegistry(TASKS, MODEL, [SHIPPED_BUNDLES], select_providers("auto"))
    registry.load_all()
    images, _, _ = generate(params(512, 40), seed=1)
    in_process(registry.get(MODEL).session, images)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--target", choices=TARGETS, help="run this target without profiling")
    parser.add_argument("--only", action="append", choices=TARGETS)
    args = parser.parse_args()
    if args.target:
        globals()[args.target]()
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or TARGETS:
        svg = args.out / f"{name}.svg"
        subprocess.run([py_spy, "record", "--rate", "40", "--format", "flamegraph", "--output", str(svg),
                        "--nonblocking", "--", sys.executable, "-m", "bench.profiles", "--target", name], check=True)
        print(f"written: {svg} ({svg.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
