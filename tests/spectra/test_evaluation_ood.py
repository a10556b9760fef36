"""The out-of-domain evaluation: its AUROC, and the shipped model's verdict on measured foreign
spectra and noise (realdata: ../shared/data or $NANOLENS_DATA)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nanolens_spectra.bundles import default_bundle_path
from nanolens_spectra.evaluation import ood
from nanolens_spectra.evaluation.data import data_root

DATA = data_root()
needs_data = pytest.mark.skipif(not (DATA / "spectra").is_dir(),
                                reason=f"real data not found at {DATA} (set NANOLENS_DATA to the shared data folder)")


def test_auroc_counts_pairs_and_halves_ties():
    assert ood.auroc([0, 1], [2, 3]) == 1.0
    assert ood.auroc([2, 3], [0, 1]) == 0.0
    assert ood.auroc([1, 1], [1, 1]) == 0.5
    assert ood.auroc([0, 2], [1, np.inf]) == 0.75  # 1 beats 0 only; inf beats both


def test_noise_of_every_kind_is_seeded_and_flagged_by_the_shipped_model():
    scorer = ood.Scorer(default_bundle_path())
    sets = ood.noise(scorer.params.model_axis(), n=20, seed=3)
    assert len(sets) == 4
    for name, data in sets.items():
        np.testing.assert_array_equal(data.spectra, ood.noise(scorer.params.model_axis(), n=20, seed=3)[name].spectra)
        assert (scorer.scores(data) > 1).all(), name


@pytest.mark.realdata
@needs_data
def test_foreign_spectra_are_flagged_and_the_goals_are_met(tmp_path, capsys):
    out = tmp_path / "ood.json"
    assert ood.main(["--data", str(DATA), "--out", str(out)]) == 0
    assert "| served (" in capsys.readouterr().out
    result = json.loads(out.read_text())
    sizes = {row["set"]: row["n"] for row in result["sets"]}
    assert {k: sizes[k] for k in ("ramanbiolib", "rampy glasses", "coffee (IR)", "fermentation (IR)")} == {
        "ramanbiolib": 202, "rampy glasses": 304, "coffee (IR)": 60, "fermentation (IR)": 204}
    assert result["in_domain"]["n"] == 900
    for verdict in ("served", "score_alone"):
        summary = result[verdict]
        assert summary["auroc"] >= ood.GOALS["auroc"], verdict
        assert summary["foreign_flagged"] >= ood.GOALS["foreign_flagged"], verdict
        assert summary["in_domain_flagged"] <= ood.GOALS["in_domain_flagged"], verdict
    # The score does not lean on the axis check: every measured set is flagged by the score alone.
    for row in result["sets"]:
        assert row["score_alone_flagged"] >= 0.9 * row["n"], row
