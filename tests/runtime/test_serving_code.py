"""The serving-code hash in every stored result's identity covers exactly what serving runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from nanolens_runtime.service import serving_code_sha256, serving_files
from nanolens_spectra.service import SPECTRA
from nanolens_tem.service import TEM


@pytest.fixture
def package(tmp_path) -> Path:
    """A copy of the TEM package's code (no bundles) to edit."""
    copy = tmp_path / "nanolens_tem"
    shutil.copytree(TEM.package, copy, ignore=shutil.ignore_patterns("bundles", "__pycache__"))
    return copy


def edited(path: Path, text: str = "\n# an edit\n") -> None:
    path.write_text(path.read_text() + text)


@pytest.mark.parametrize("serving", ["science/occlusion.py", "science/segmentation.py", "science/cnn.py",
                                     "service.py"])
def test_an_edit_to_serving_code_changes_the_identity(package, serving):
    before = serving_code_sha256(package, ("numpy",))
    edited(package / serving)
    assert serving_code_sha256(package, ("numpy",)) != before


@pytest.mark.parametrize("other", ["training/cnn_train.py", "evaluation/evaluate.py", "synthetic/agglomerates.py",
                                   "__main__.py"])
def test_an_edit_elsewhere_keeps_the_identity(package, other):
    before = serving_code_sha256(package, ("numpy",))
    edited(package / other)
    assert serving_code_sha256(package, ("numpy",)) == before


def test_a_new_serving_module_and_a_library_change_the_identity(package):
    before = serving_code_sha256(package, ("numpy",))
    (package / "science" / "extra.py").write_text("X = 1\n")
    with_module = serving_code_sha256(package, ("numpy",))
    assert with_module != before
    assert serving_code_sha256(package, ("numpy", "scipy")) != with_module


def test_the_services_hash_their_own_serving_code():
    tem = {p.relative_to(TEM.package).as_posix() for p in serving_files(TEM.package)}
    assert {"service.py", "science/occlusion.py", "science/cnn.py", "science/segmentation.py"} <= tem
    assert not any(p.startswith(("training/", "evaluation/", "synthetic/")) for p in tem)
    spectra = {p.relative_to(SPECTRA.package).as_posix() for p in serving_files(SPECTRA.package)}
    assert "science/preprocessing.py" in spectra and not any(p.startswith("synthetic/") for p in spectra)
    assert TEM.code_sha256() == serving_code_sha256(TEM.package, TEM.libraries)


def test_a_package_without_serving_code_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="lacks serving code"):
        serving_files(tmp_path)


def test_shared_science_belongs_to_the_domains_that_import_it():
    from nanolens_lpem.service import LPEM
    from nanolens_runtime.service import shared_science
    from nanolens_sem.service import SEM

    imports = {d.name: set(shared_science(serving_files(d.package))) for d in (TEM, SEM, SPECTRA, LPEM)}
    assert imports == {"tem": {"nanolens_micrographs"}, "sem": {"nanolens_micrographs"}, "spectra": set(),
                       "lpem": {"nanolens_micrographs"}}


def test_an_edit_to_shared_science_changes_the_identity_of_its_importers_only(package, tmp_path, monkeypatch):
    import sys

    import nanolens_micrographs

    copy = tmp_path / "shared" / "nanolens_micrographs"
    shutil.copytree(Path(nanolens_micrographs.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.syspath_prepend(str(copy.parent))
    monkeypatch.delitem(sys.modules, "nanolens_micrographs")  # found afresh, in the copy
    tem, spectra = serving_code_sha256(package, ("numpy",)), serving_code_sha256(SPECTRA.package, ("numpy",))
    edited(copy / "__init__.py")
    assert serving_code_sha256(package, ("numpy",)) != tem
    assert serving_code_sha256(SPECTRA.package, ("numpy",)) == spectra
