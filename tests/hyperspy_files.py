"""Public micrographs from real instruments for the readers' tests: the TIFFs (Zeiss, FEI/Thermo,
Olympus SIS, ImageJ, DigitalMicrograph) that hyperspy 1.7.6's wheel ships as its own test files.

``make tools`` runs this module to fetch the wheel once and unpack them into :data:`FOLDER`
(gitignored); tests never download and skip naming this when the folder is absent.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FOLDER = REPO / "build/hyperspy/tiff_files"
SKIP = f"{FOLDER} absent: `make tools` unpacks hyperspy 1.7.6's test files there"
_PREFIX = "hyperspy/tests/io/tiff_files/"


def fetch() -> None:
    """Download the wheel (pip, no dependencies) and unpack its TIFF test files, zipped ones too."""
    wheels = REPO / "build/hyperspy"
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
                    "hyperspy==1.7.6", "-d", str(wheels)], check=True)
    wheel = next(wheels.glob("hyperspy-1.7.6-*.whl"))
    with tempfile.TemporaryDirectory(dir=wheels) as tmp, zipfile.ZipFile(wheel) as whl:
        out = Path(tmp) / "tiff_files"
        for name in whl.namelist():
            if not name.startswith(_PREFIX) or name.endswith("/"):
                continue
            target = out / name[len(_PREFIX):]
            target.parent.mkdir(parents=True, exist_ok=True)
            data = whl.read(name)
            if name.endswith(".zip"):  # e.g. tiff_Zeiss_SEM.zip -> tiff_Zeiss_SEM/
                zipfile.ZipFile(io.BytesIO(data)).extractall(target.with_suffix(""))
            else:
                target.write_bytes(data)
        shutil.rmtree(FOLDER, ignore_errors=True)
        out.rename(FOLDER)


if __name__ == "__main__":
    fetch()
