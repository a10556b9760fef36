"""Vendor text exports of Raman spectra (B&W Tek, Horiba LabSpec, Renishaw WiRE, WITec), written here in
their layouts, read back by the gateway's decoder; what cannot be read is named; and, where the
ramanchada2 1.5.0 wheel is unpacked ($NANOLENS_RAMANCHADA2), every one of its 146 real exports."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from nanolens_formats.spectra import decode_spectra
from nanolens_formats.spectra_text import SUPPORTED, raster_grid
from nanolens_runtime.errors import InvalidArgument

RNG = np.random.default_rng(3)
AXIS = np.linspace(150.0, 3100.0, 300)
SPECTRA = (1000 + 500 * RNG.random((6, AXIS.size))).round(3)


def bwtek(axis, spectra, decimal=",", blank_pixels=5, version="BWSpec4.11_1") -> bytes:
    """A B&W Tek export: key;value header, then the Pixel table (one 'Dark Subtracted #k' per spectrum)."""
    def fmt(v):
        return f"{v:.4f}".replace(".", decimal)

    lines = [f"File Version;{version}", "Date;2023-01-17 14:03:31", "model;BTC162E-532S-SYS",
             f"laser_wavelength;532{decimal}14", "intigration times(ms);40", "xaxis;1"]
    k = len(spectra)
    cols = ["Pixel", "Wavelength", "Wavenumber", "Raman Shift", "Dark", "Reference"]
    for i in range(1, k + 1):
        cols += [f"Raw data #{i}", f"Dark Subtracted #{i}", f"%TR #{i}"]
    lines.append(";".join(cols) + ";")
    for p in range(blank_pixels):  # pixels below the calibrated range: no Raman shift
        lines.append(";".join([str(p), "   ", "   ", "   ", fmt(958.3), "65535"] + [fmt(1.0)] * 3 * k) + ";")
    for j, x in enumerate(axis):
        cells = [str(blank_pixels + j), fmt(532 + x / 100), fmt(18796 - x), fmt(x), fmt(900.0), "65535"]
        for s in spectra:
            cells += [fmt(s[j] + 900), fmt(s[j]), fmt(0.0)]
        lines.append(";".join(cells) + ";")
    return ("\r\n".join(lines) + "\r\n").encode()


def labspec_single(axis, spectrum) -> bytes:
    head = ["#Acq. time (s)=\t10", "#Accumulations=\t2", "#Range (cm-\u00b9)=\t150...3100", "#Laser (nm)=\t785"]
    rows = [f"{x:.3f}\t{y:.2f}" for x, y in zip(axis[::-1], spectrum[::-1], strict=True)]
    return ("\r\n".join(head + rows) + "\r\n").encode("cp1252")  # LabSpec writes the Windows code page


def labspec_map(axis, cube, xs, ys) -> bytes:
    lines = ["\t\t" + "\t".join(f"{x:.3f}" for x in axis)]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            lines.append(f"{x}\t{y}\t" + "\t".join(f"{v:.2f}" for v in cube[i, j]))
    return ("\n".join(lines) + "\n").encode()


def renishaw_long(axis, cube, xs, ys) -> bytes:
    lines = ["#X\t\t#Y\t\t#Wave\t\t#Intensity"]
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            for w, v in zip(axis[::-1], cube[i, j][::-1], strict=True):  # WiRE writes high to low
                lines.append(f"{x:.6f}\t{y:.6f}\t{w:.6f}\t{v:.6f}")
    return ("\n".join(lines) + "\n").encode()


def witec_table(axis, spectra) -> bytes:
    lines = ["\t".join(["Spectrum"] + [f"Spec.Data 1 ({i}/0)" for i in range(len(spectra))]),
             "\t".join(["rel. 1/cm"] + ["CCD cts"] * len(spectra))]
    lines += [f"{x:.4f}\t" + "\t".join(f"{s[j]:.1f}" for s in spectra) + "\t" for j, x in enumerate(axis)]
    return ("\n".join(lines) + "\n").encode()


def test_bwtek_with_decimal_commas_and_uncalibrated_pixels():
    data = decode_spectra(bwtek(AXIS, SPECTRA[:2]), "sample.txt", {})
    assert data.spectra.shape == (2, AXIS.size)  # the 5 pixels without a Raman shift are left out
    np.testing.assert_allclose(data.axis, AXIS, atol=1e-4)
    np.testing.assert_allclose(data.spectra, SPECTRA[:2], atol=1e-3)
    assert data.format.startswith("B&W Tek text export (BWSpec4.11_1)") and "laser 532.14 nm" in data.format


def test_bwtek_with_decimal_points():
    data = decode_spectra(bwtek(AXIS, SPECTRA[:1], decimal=".", version="BWRam4.11_11"), "s.txt", {})
    np.testing.assert_allclose(data.spectra, SPECTRA[:1], atol=1e-3)
    assert "BWRam4.11_11" in data.format


def test_labspec_single_spectrum_in_the_windows_code_page():
    data = decode_spectra(labspec_single(AXIS, SPECTRA[0]), "ls.txt", {})
    np.testing.assert_allclose(data.axis, AXIS[::-1], atol=1e-3)  # decreasing, as written
    np.testing.assert_allclose(data.spectra[0], SPECTRA[0][::-1], atol=0.01)
    assert data.format == "Horiba LabSpec text export (two columns)"


def test_labspec_map_keeps_its_grid():
    cube = SPECTRA.reshape(2, 3, -1)
    data = decode_spectra(labspec_map(AXIS, cube, xs=[-5, 0, 5], ys=[10, 20]), "map.txt", {})
    assert data.grid == (2, 3) and data.spectra.shape == (6, AXIS.size)
    np.testing.assert_allclose(data.spectra.reshape(2, 3, -1), cube, atol=0.01)
    assert data.format.startswith("Horiba LabSpec wide text export (map")


def test_renishaw_long_map():
    cube = SPECTRA.reshape(3, 2, -1)
    data = decode_spectra(renishaw_long(AXIS, cube, xs=[0.0, 1.5], ys=[0.0, 2.0, 4.0]), "wire.txt", {})
    assert data.grid == (3, 2) and data.spectra.shape == (6, AXIS.size)
    np.testing.assert_allclose(data.axis, AXIS[::-1], atol=1e-5)
    np.testing.assert_allclose(data.spectra.reshape(3, 2, -1)[..., ::-1], cube, atol=1e-5)
    assert data.format.startswith("Renishaw WiRE text export (long: X, Y, Wave, Intensity")


def test_renishaw_single_spectrum():
    text = "#Wave\t\t#Intensity\n" + "\n".join(f"{x:.4f}\t{y:.4f}" for x, y in zip(AXIS[::-1], SPECTRA[0][::-1],
                                                                                     strict=True))
    data = decode_spectra(text.encode(), "w.txt", {})
    assert data.spectra.shape == (1, AXIS.size) and data.format.startswith("Renishaw WiRE")


def test_witec_table_is_read_by_columns():
    data = decode_spectra(witec_table(AXIS, SPECTRA[:3]), "witec.txt", {})
    assert data.spectra.shape == (3, AXIS.size)  # not 299 spectra of 4 channels
    np.testing.assert_allclose(data.spectra, SPECTRA[:3], atol=0.05)
    assert data.format.startswith("WITec Project Table export")


def test_semicolon_table_with_decimal_commas():
    text = "\n".join(f"{x:.2f};{y:.2f}".replace(".", ",") for x, y in zip(AXIS, SPECTRA[0], strict=True))
    data = decode_spectra(text.encode(), "eu.csv", {})
    np.testing.assert_allclose(data.spectra[0], SPECTRA[0], atol=0.01)


def test_a_large_table_reads_the_same_in_c_and_a_bad_cell_deep_in_is_named_by_its_line():
    many = np.tile(SPECTRA, (7, 1))[:40]
    rows = [";".join(f"{v:.3f}".replace(".", ",") for v in row) for row in many]
    text = ";".join(f"{x:.3f}".replace(".", ",") for x in AXIS) + "\n" + "\n".join(rows) + "\n"
    data = decode_spectra(text.encode(), "eu.csv", {})  # decimal commas, numbers parsed by numpy's reader
    np.testing.assert_allclose(data.spectra, many, atol=5e-4)
    np.testing.assert_allclose(data.axis, AXIS, atol=5e-4)
    broken = text.splitlines()
    cells = broken[31].split(";")
    broken[31] = ";".join([*cells[:3], "n/a", *cells[4:]])  # same width, one cell of text
    with pytest.raises(InvalidArgument, match=r"line 32 has a value that is not a number"):
        decode_spectra("\n".join(broken).encode(), "eu.csv", {})


def test_raster_grid_refuses_incomplete_scans():
    assert raster_grid(np.array([[0, 0], [1, 0], [0, 1], [1, 1]], float)) == (2, 2)
    assert raster_grid(np.array([[0, 0], [1, 0], [0, 1]], float)) is None
    assert raster_grid(np.array([[0, 0], [1, 0], [1, 1], [0, 1]], float)) is None  # serpentine


@pytest.mark.parametrize("data, key, looks_like", [
    (b"WDF1" + bytes(200), "scan.wdf", "Renishaw WiRE .wdf"),
    (b"WIT_PR06" + bytes(200), "project.wip", "WITec Project .wip"),
    (b"WDF1" + bytes(200), "scan.txt", "Renishaw WiRE .wdf"),  # binary whatever its name
    (b"\x89PNG\r\n\x1a\n\x00\x00binary", "x.csv", "PNG image"),
    (b"File Version;BWSpec4.11_1\nDate;2023\nPixel;Wavelength;Dark\n0;1;2\n", "bw.txt", "B&W Tek"),
    (b"File Version;BWSpec4.11_1\nPixel;Raman Shift;Dark Subtracted #1\n0;   ;1,0\n1;   ;2,0\n", "bw.txt",
     "B&W Tek"),
    (b"#X\t#Y\t#Wave\t#Intensity\n0\t0\t100\t1\n0\t0\t99\t2\n0\t1\t100\t1\n", "w.txt", "Renishaw WiRE"),
    (b"\t\t100\t101\t102\n0\t0\t1\t2\n0\t1\t1\t2\t3\n", "ls.txt", "Horiba LabSpec wide"),
    (b"12.5\n13.5\n14.5\n", "witec (Y-Axis).txt", "a space-separated table"),
])
def test_unreadable_files_say_what_they_looked_like(data, key, looks_like):
    with pytest.raises(InvalidArgument) as info:
        decode_spectra(data, key, {})
    assert info.value.field == "input"
    assert looks_like in info.value.message.split("looks like", 1)[1], info.value.message
    assert SUPPORTED in info.value.message


def test_unknown_extension_lists_what_can_be_read():
    with pytest.raises(InvalidArgument, match="Renishaw WiRE text export"):
        decode_spectra(b"1,2", "x.json", {})


# -- the real exports in the ramanchada2 1.5.0 wheel -------------------------------------------------------


def _ramanchada2() -> Path | None:
    root = os.environ.get("NANOLENS_RAMANCHADA2")
    if not root:
        return None
    for candidate in (Path(root) / "ramanchada2/auxiliary/spectra/datasets2", Path(root)):
        if candidate.is_dir() and any(candidate.rglob("*.txt")):
            return candidate
    return None


RAMANCHADA2 = _ramanchada2()


@pytest.mark.realdata
@pytest.mark.skipif(RAMANCHADA2 is None, reason="set NANOLENS_RAMANCHADA2 to an unpacked ramanchada2==1.5.0 wheel "
                    "(pip download ramanchada2==1.5.0 --no-deps; unzip)")
def test_every_real_export_in_ramanchada2_is_read():
    files = sorted(RAMANCHADA2.rglob("*.txt"))
    formats: dict[str, int] = {}
    for path in files:
        data = decode_spectra(path.read_bytes(), path.name, {})
        assert data.spectra.shape[0] == 1 and data.spectra.shape[1] >= 700, path
        assert data.axis.min() < 200 and data.axis.max() > 1900, path  # a Raman shift axis, cm^-1
        kind = data.format.split(" (")[0]
        formats[kind] = formats.get(kind, 0) + 1
    assert len(files) == 146
    assert formats == {"B&W Tek text export": 108, "two-column text": 38}


@pytest.mark.realdata
@pytest.mark.skipif(RAMANCHADA2 is None, reason="set NANOLENS_RAMANCHADA2 to an unpacked ramanchada2==1.5.0 wheel")
def test_real_ramanchada2_spectra_are_out_of_domain_for_the_shipped_model():
    from nanolens_runtime.bundles import ModelBundle
    from nanolens_spectra.bundles import default_bundle_path
    from nanolens_spectra.science.preprocessing import PreprocessParams, preprocess
    from nanolens_spectra.training.export import run_onnx

    bundle = ModelBundle.load(default_bundle_path())
    pre = PreprocessParams.from_dict(bundle.manifest["preprocessing"])
    graph = bundle.onnx_path.read_bytes()
    scores, refused = [], 0
    for path in sorted(RAMANCHADA2.rglob("*.txt")):
        data = decode_spectra(path.read_bytes(), path.name, {})
        try:
            x = preprocess(data.spectra.astype(np.float32), data.axis, pre)
        except ValueError:  # the axis covers less than 95 % of the model's: refused, not classified
            refused += 1
            continue
        scores.append(float(run_onnx(graph, x, "ood_score")[0]))
    assert (len(scores), refused) == (123, 23)
    assert min(scores) > 1  # every one flagged (measured: lowest 21.7)
