"""The gateway code that decides a result is part of its identity: a changed reader or adapter
re-keys exactly the domains that use it; comments and docstrings re-key nothing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from nanolens_gateway.code_identity import adapter_sha256, result_code_modules, result_code_sha256
from nanolens_gateway.domains import DOMAIN_MODULES, domains

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def sources(tmp_path) -> tuple[Path, Path]:
    """A copy of the gateway and formats source roots, to edit."""
    roots = (tmp_path / "gateway", tmp_path / "formats")
    shutil.copytree(REPO / "gateway", roots[0], ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "formats", roots[1], ignore=shutil.ignore_patterns("__pycache__"))
    return roots


def digests(roots) -> dict[str, str]:
    return {module.rsplit(".", 1)[-1]: result_code_sha256(module, roots) for module in DOMAIN_MODULES}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1))


def test_every_adapter_hashes_its_own_module_and_the_readers_it_uses():
    tem = result_code_modules("nanolens_gateway.adapters.tem")
    assert {"nanolens_gateway.adapters.tem", "nanolens_formats.images"} <= set(tem)
    assert "nanolens_formats.spectra_text" not in tem and "nanolens_gateway.server" not in tem
    spectra = result_code_modules("nanolens_gateway.adapters.spectra")
    assert {"nanolens_formats.spectra", "nanolens_formats.spectra_text"} <= set(spectra)
    assert "nanolens_formats.images" not in spectra
    assert "nanolens_formats.movies" in result_code_modules("nanolens_gateway.adapters.lpem")


def test_the_installed_adapters_hash_as_the_source_tree(sources):
    assert {d.name: adapter_sha256(d.adapter) for d in domains()} == digests(sources)


def test_a_change_to_the_tem_adapters_code_rekeys_tem_results_only(sources):
    before = digests(sources)
    edit(sources[0] / "nanolens_gateway/adapters/tem.py", "async def particle_sizes(",
         "BRIGHT_DEFAULT = True\n\n\nasync def particle_sizes(")
    after = digests(sources)
    assert after["tem"] != before["tem"]
    assert {k: v for k, v in after.items() if k != "tem"} == {k: v for k, v in before.items() if k != "tem"}


def test_a_change_to_a_reader_rekeys_the_domains_that_read_with_it(sources):
    before = digests(sources)
    edit(sources[1] / "nanolens_formats/spectra_text.py", "def read_text_spectra(",
         "LAYOUT_VERSION = 2\n\n\ndef read_text_spectra(")
    after = digests(sources)
    assert after["spectra"] != before["spectra"]
    assert (after["tem"], after["sem"], after["lpem"]) == (before["tem"], before["sem"], before["lpem"])
    edit(sources[1] / "nanolens_formats/images.py", "def decode_image(", "ZEISS_FIX = 1\n\n\ndef decode_image(")
    again = digests(sources)
    assert again["tem"] != after["tem"] and again["sem"] != after["sem"] and again["spectra"] == after["spectra"]


def test_comments_and_docstrings_rekey_nothing(sources):
    before = digests(sources)
    edit(sources[0] / "nanolens_gateway/adapters/tem.py", "async def particle_sizes(",
         "# a comment about sizes\nasync def particle_sizes(")
    edit(sources[1] / "nanolens_formats/images.py", '"""', '"""An edited module docstring. ')
    signature = "def decode_image(data: bytes, key: str, max_pixels: int) -> DecodedImage:\n"
    edit(sources[1] / "nanolens_formats/images.py", signature, signature + '    """A new docstring."""\n')
    assert digests(sources) == before


def test_the_core_is_not_part_of_any_result(sources):
    before = digests(sources)
    edit(sources[0] / "nanolens_gateway/server.py", "MAX_URL_SECONDS = ", "CORE_CHANGE = 1\nMAX_URL_SECONDS = ")
    assert digests(sources) == before


def test_a_program_that_decides_results_rekeys_them_when_installed_or_upgraded(sources, tmp_path, monkeypatch):
    """The scale-bar reader's OCR program: a result read without it (no pixel size, a warning) must
    not be served once it is installed, nor one read by an older version after an upgrade."""
    edit(sources[1] / "nanolens_formats/scalebar.py", 'RESULT_PROGRAMS = ("tesseract",)',
         'RESULT_PROGRAMS = ("nanolens-test-ocr",)')
    absent = digests(sources)
    program = tmp_path / "bin" / "nanolens-test-ocr"
    program.parent.mkdir()
    monkeypatch.setenv("PATH", f"{program.parent}:{os.environ['PATH']}")
    versions = []
    for version in ("5.3.0", "5.4.1"):
        program.write_text(f"#!/bin/sh\necho 'nanolens-test-ocr {version}'\n")
        program.chmod(0o755)
        versions.append(digests(sources))
    assert absent["tem"] != versions[0]["tem"] != versions[1]["tem"] != absent["tem"]
    assert all({k: v for k, v in d.items() if k != "tem"} == {k: v for k, v in absent.items() if k != "tem"}
               for d in versions)
