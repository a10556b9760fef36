"""The reference pipeline on measured spectra (../shared/data or $NANOLENS_DATA)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from support import require_train_extra

require_train_extra()

from nanolens_spectra.training import evaluate_real as ev  # noqa: E402

DATA = ev.default_data_dir()
pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (DATA / "spectra").is_dir(),
                       reason=f"real data not found at {DATA} (set NANOLENS_DATA to the shared data folder)"),
]


def test_coffee_loads_in_the_chemotools_layout():
    ds = ev.coffee_dataset(DATA)
    assert ds.spectra.shape == (60, 1841)
    assert ds.class_counts() == {"Brasil": 20, "Ethiopia": 20, "Vietnam": 20}
    np.testing.assert_array_equal(ds.axis, np.arange(1841.0))


def test_ramanbiolib_grouping_and_dropped_types():
    ds, dropped, molecules = ev.ramanbiolib_dataset(DATA)
    assert ds.class_counts() == {"AminoAcids": 13, "Lipids": 57, "PrimaryMetabolites": 10, "Proteins": 76,
                                 "Saccharides": 30}
    assert dropped == {"NucleicAcids": 8, "Peptides": 1, "Pigments": 5, "Vitamins": 2}
    assert ds.axis[0] == 450 and ds.axis[-1] == 1800 and ds.spectra.shape == (186, 1351)
    assert molecules.shape == (186,) and len(set(molecules.tolist())) < 186   # repeats exist


def test_evaluate_real_cli_writes_the_table_as_json(tmp_path, capsys):
    out = tmp_path / "real.json"
    assert ev.main(["--data", str(DATA), "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "coffee" in table and "ramanbiolib/molecule" in table
    results = {r["name"]: r for r in json.loads(out.read_text())["results"]}
    assert set(results) == {"coffee", "ramanbiolib", "ramanbiolib/molecule"}
    for r in results.values():
        cv = r["cross_validation"]
        assert cv["folds"] == 10 and sum(map(sum, cv["confusion"])) == r["n_spectra"]
        assert r["preprocessing"]["baseline"] is False and r["preprocessing"]["despike"] is False
        # Far above the majority class on both sets, for the network and the baseline.
        assert cv["accuracy_mean"] > cv["chance_accuracy"] + 0.3
        assert cv["baseline_accuracy_mean"] > cv["chance_accuracy"] + 0.3
    assert results["ramanbiolib/molecule"]["cross_validation"]["grouped"] is True
