"""What an image installs: the wheel carries the shipped model bundles and no training code's deps."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from nanolens_runtime.bundles import find_bundles
from nanolens_spectra.service import SHIPPED_BUNDLES as SPECTRA_BUNDLES
from nanolens_tem.service import SHIPPED_BUNDLES as TEM_BUNDLES
from support import REPO


def test_wheel_contains_every_shipped_bundle(tmp_path):
    leftover = not (REPO / "build").exists()  # setuptools builds in the source tree; tidy up after
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(REPO)], check=True, timeout=300, capture_output=True)
    if leftover:
        shutil.rmtree(REPO / "build", ignore_errors=True)
    (wheel,) = tmp_path.glob("nanolens-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, root in (("nanolens_spectra", SPECTRA_BUNDLES), ("nanolens_tem", TEM_BUNDLES)):
        bundles = find_bundles(root)
        assert bundles, f"no shipped {package} bundle"
        for bundle in bundles:
            for file in ("model.onnx", "manifest.json"):
                assert f"{package}/bundles/{bundle.parent.name}/{bundle.name}/{file}" in names
    requires = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    core = [line for line in requires.splitlines() if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert not any("torch" in line or "onnxruntime" in line for line in core)
