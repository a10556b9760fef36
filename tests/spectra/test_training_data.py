"""Loading users' labelled spectra (CSV, CSV + labels file, NPZ) and rejecting bad data."""

from __future__ import annotations

import numpy as np
import pytest

from nanolens_spectra.training.data import load_labelled_dataset


def write_csv(path, header, rows):
    path.write_text("\n".join(",".join(str(v) for v in r) for r in [header, *rows]) + "\n")
    return path


def make_rows(labels, n_channels=6, seed=0):
    rng = np.random.default_rng(seed)
    return [[lab, *np.round(rng.random(n_channels), 4)] for lab in labels]


def test_csv_with_label_column(tmp_path):
    axis = [400.0, 401.5, 403.0, 404.5, 406.0, 407.5]
    labels = ["b"] * 3 + ["a"] * 4
    p = write_csv(tmp_path / "s.csv", ["label", *axis], make_rows(labels))
    ds = load_labelled_dataset(p, min_per_class=3)
    assert ds.spectra.shape == (7, 6) and ds.spectra.dtype == np.float32
    assert ds.class_names == ("a", "b") and ds.labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    np.testing.assert_array_equal(ds.axis, axis)
    assert ds.class_counts() == {"a": 4, "b": 3}


def test_csv_with_separate_labels_file(tmp_path):
    """The chemotools coffee layout: headers are channel indices, labels in their own file."""
    rows = [r[1:] for r in make_rows(range(6))]
    p = write_csv(tmp_path / "spectra.csv", list(range(6)), rows)
    lab = tmp_path / "labels.csv"
    lab.write_text("labels\nBrasil\nBrasil\nBrasil\nVietnam\nVietnam\nVietnam\n")
    ds = load_labelled_dataset(p, lab, min_per_class=3)
    assert ds.class_names == ("Brasil", "Vietnam") and ds.n_items == 6
    np.testing.assert_array_equal(ds.axis, np.arange(6.0))
    with pytest.raises(ValueError, match="no 'label' column and no labels file"):
        load_labelled_dataset(p, min_per_class=3)


def test_npz_with_int_and_string_labels(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.random((8, 5)).astype(np.float32)
    axis = np.linspace(100, 200, 5)
    np.savez(tmp_path / "a.npz", spectra=x, labels=np.array([0, 1] * 4), axis=axis,
             class_names=np.array(["low", "high"]))
    ds = load_labelled_dataset(tmp_path / "a.npz", min_per_class=4)
    assert ds.class_names == ("low", "high") and ds.labels.tolist() == [0, 1] * 4
    np.testing.assert_array_equal(ds.spectra, x)
    np.savez(tmp_path / "b.npz", spectra=x, labels=np.array(["y", "x"] * 4), axis=axis)
    ds = load_labelled_dataset(tmp_path / "b.npz", min_per_class=4)
    assert ds.class_names == ("x", "y") and ds.labels.tolist() == [1, 0] * 4


def test_sha256_covers_spectra_and_labels(tmp_path):
    p = write_csv(tmp_path / "s.csv", ["label", 1, 2, 3], make_rows(["a"] * 3 + ["b"] * 3, 3))
    a = load_labelled_dataset(p, min_per_class=3)
    assert a.sha256() == load_labelled_dataset(p, min_per_class=3).sha256()
    flipped = type(a)(a.spectra, 1 - a.labels, a.axis, a.class_names, a.source)
    assert flipped.sha256() != a.sha256()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("label,1,2,3\na,1,2,3\na,1,2\n", "line 3: 3 fields, header has 4"),
        ("label,1,2,3\na,1,nan,3\nb,1,2,3\n", "NaN"),
        ("label,1,2,3\na,1,x,3\nb,1,2,3\n", "'x' is not a number"),
        ("label,1,wavenumber,3\na,1,2,3\nb,1,2,3\n", "header column 3"),
        ("label,1,2,3\na,1,2,3\na,1,2,3\n", "at least 2 classes"),
        ("label,1,2,3\na,1,2,3\nb,1,2,3\nb,1,2,3\n", r"fewer than 2 spectra .*a \(1\)"),
        ("label,1,2,3\n", "no spectra"),
    ],
)
def test_bad_csv_is_rejected_with_a_reason(tmp_path, content, message):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(ValueError, match=message):
        load_labelled_dataset(p, min_per_class=2)


def test_bad_npz_and_paths(tmp_path):
    np.savez(tmp_path / "m.npz", spectra=np.ones((4, 3)), labels=np.array([0, 1, 0, 1]))
    with pytest.raises(ValueError, match="missing arrays axis"):
        load_labelled_dataset(tmp_path / "m.npz", min_per_class=2)
    np.savez(tmp_path / "n.npz", spectra=np.ones((4, 3)), labels=np.array([0, 1, 0, 1]), axis=np.arange(4.0))
    with pytest.raises(ValueError, match="axis has 4 points but the spectra have 3"):
        load_labelled_dataset(tmp_path / "n.npz", min_per_class=2)
    with pytest.raises(ValueError, match="no such file"):
        load_labelled_dataset(tmp_path / "absent.csv")
    (tmp_path / "x.xlsx").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_labelled_dataset(tmp_path / "x.xlsx")
