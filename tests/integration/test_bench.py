"""`make bench` keeps working: the quick run of every suite completes and reports what the docs quote.

Timings are not asserted (shared, noisy machines); only that each figure is there and sane.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from bench.memory import ResidentPeak
from support import run_module


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux's resident high-water reset")
def test_resident_peak_sees_a_native_buffer_freed_inside_the_block():
    before = np.ones(2**25)           # 256 MiB resident before: a high-water mark the reset must clear
    del before
    with ResidentPeak() as idle:
        pass
    with ResidentPeak() as busy:
        buf = np.ones(2**25 // 2)     # 128 MiB, touched, then freed before the block ends
        del buf
    assert idle.added_mib < 16
    assert 120 < busy.added_mib < 160
    assert busy.peak_mib >= busy.added_mib


@pytest.mark.slow
def test_quick_benchmark_runs_every_suite(tmp_path):
    run_module("bench", "--quick", "--out", str(tmp_path))
    spectra = json.loads((tmp_path / "spectra.json").read_text())
    tem = json.loads((tmp_path / "tem.json").read_text())
    jobs = json.loads((tmp_path / "jobs.json").read_text())
    sem = json.loads((tmp_path / "sem.json").read_text())
    assert set(sem["modes"]) == {"embed", "lens+anomaly"}
    assert all(m["in_process_per_s"] > 0 and m["through_stack_per_s"] > 0 for m in sem["modes"].values())
    assert [s["n"] for s in sem["search"]] == [1000, 10_000] and all(s["p99_ms"] >= s["p50_ms"] for s in sem["search"])
    assert sem["memory"]["process_peak_mib"] > 100
    assert jobs["job_done"] == jobs["items"] > 0 and jobs["direct_s"] > 0 and jobs["job_over_direct"] > 0
    assert spectra["map"]["n_spectra"] == 64 * 64 and spectra["map"]["platform_s"] > 0
    assert spectra["single_spectrum"]["batched_64_callers"]["requests"] > 0
    assert set(tem["methods"]) == {"cnn", "ann", "watershed", "hough"}
    assert all(m["through_stack_s"] > 0 and m["particles"] > 0 for m in tem["methods"].values())
    # the added peak may be 0 where freed heap from an earlier method is reused
    assert all(m["peak_resident_mib"] > 100 and m["peak_resident_mib"] >= m["peak_resident_added_mib"] >= 0
               for m in tem["methods"].values())
    assert tem["default_method"] == "cnn" and tem["default_vs_watershed"] > 0
    assert tem["batch"]["images_per_s"] > 0
