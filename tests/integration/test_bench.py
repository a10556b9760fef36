"""`make bench` keeps working: the quick run of every suite completes and reports what the docs quote.

Timings are not asserted (shared, noisy machines); only that each figure is there and sane.
"""

import json

import pytest

from support import run_module


@pytest.mark.slow
def test_quick_benchmark_runs_every_suite(tmp_path):
    run_module("bench", "--quick", "--out", str(tmp_path))
    spectra = json.loads((tmp_path / "spectra.json").read_text())
    tem = json.loads((tmp_path / "tem.json").read_text())
    assert spectra["map"]["n_spectra"] == 64 * 64 and spectra["map"]["platform_s"] > 0
    assert spectra["single_spectrum"]["batched_64_callers"]["requests"] > 0
    assert set(tem["methods"]) == {"cnn", "ann", "watershed", "hough"}
    assert all(m["through_stack_s"] > 0 and m["particles"] > 0 for m in tem["methods"].values())
    assert tem["default_method"] == "cnn" and tem["default_vs_watershed"] > 0
    assert tem["batch"]["images_per_s"] > 0
