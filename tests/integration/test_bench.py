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


def _spectra(spectra: dict) -> None:
    assert spectra["map"]["n_spectra"] == 64 * 64 and spectra["map"]["platform_s"] > 0
    assert spectra["map"]["by_reference_s"] > 0 and len(spectra["map"]["sizes"]) == 2
    assert spectra["single_spectrum"]["batched_64_callers"]["requests"] > 0


def _many(many: dict) -> None:
    assert many["items"] == 24 and min(many["unary_items_per_s"], many["many_named_items_per_s"],
                                        many["many_inline_items_per_s"], many["many_numbers_only_items_per_s"],
                                        many["engine_items_per_s"]) > 0
    latency = many["latency_1_caller_ms"]
    assert latency["analyze_p95"] >= latency["analyze_p50"] > 0 and "fetch" in many["stages_many_s"]


def _tem(tem: dict) -> None:
    assert set(tem["methods"]) == {"cnn", "ann", "watershed", "hough"}
    assert all(m["through_stack_s"] > 0 and m["particles"] > 0 for m in tem["methods"].values())
    # the added peak may be 0 where freed heap from an earlier method is reused
    assert all(m["peak_resident_mib"] > 100 and m["peak_resident_mib"] >= m["peak_resident_added_mib"] >= 0
               for m in tem["methods"].values())
    assert tem["default_method"] == "cnn" and tem["default_vs_watershed"] > 0
    assert tem["batch"]["images_per_s"] > 0


def _lpem(lpem: dict) -> None:
    assert lpem["sizes"] and all(s["nanolens"]["total_fps"] > 0 for s in lpem["sizes"].values())
    assert lpem["memory"] and all(m["detections"] > 0 for m in lpem["memory"])


def _sem(sem: dict) -> None:
    assert set(sem["modes"]) == {"embed", "lens+anomaly"}
    assert all(m["in_process_per_s"] > 0 and m["through_stack_per_s"] > 0 for m in sem["modes"].values())
    assert sem["memory"]["process_peak_mib"] > 100


def _search(search: dict) -> None:
    assert [s["n"] for s in search["sizes"]] == [1000, 5000]
    for s in search["sizes"]:
        assert s["exact"]["p99_ms"] >= s["exact"]["p50_ms"] > 0 and s["graph"]["p99_ms"] >= s["graph"]["p50_ms"] > 0
        assert 0.5 <= s["graph"]["recall_at_10"] <= 1 and s["graph"]["build_s"] > 0
    assert search["gateway"]["p99_ms"] >= search["gateway"]["p50_ms"] > 0


def _jobs(jobs: dict) -> None:
    assert jobs["job_done"] == jobs["items"] > 0 and jobs["direct_s"] > 0 and jobs["job_over_direct"] > 0
    assert jobs["rate"]["done"] == jobs["rate"]["items"] == jobs["items"] and jobs["rate"]["items_per_s"] > 0


def _landed(landed: dict) -> None:
    assert set(landed["kinds"]) == {"spectrum", "tem_512"}  # --quick leaves the 2048 x 2048 image out
    for entry in landed["kinds"].values():
        times = entry["landed_to_result"]
        # no comparison of the two times: on a loaded machine either may come out ahead in a quick run
        assert times["p95_s"] >= times["p50_s"] > 0 and entry["in_process_p50_s"] > 0 and times["n"] > 0


def _gateway(gateway: dict) -> None:
    assert [r["clients"] for r in gateway["load"]] == [1, 8, 32]
    assert all(r["health_p99_ms"] >= r["health_p50_ms"] > 0 and r["analyses"] > 0 for r in gateway["load"])
    assert all(r["apart_p99_ms"] >= r["apart_p50_ms"] > 0 for r in gateway["load"])  # the separate probe too
    assert all(b["code"] in ("RESOURCE_EXHAUSTED", "INVALID_ARGUMENT") for b in gateway["bombs"])
    assert gateway["outage"]["job_state"] == "done" and gateway["outage"]["failed"] == 0


def _storage(storage: dict) -> None:
    assert set(storage["stores"]) == {"seaweedfs", "moto"}
    for s in storage["stores"].values():
        assert min(s["small_put_ms"], s["small_get_ms"], s["large_put_ms"], s["large_get_ms"]) > 0
        assert s["job"]["done"] == s["job"]["items"] > 0


SUITES = {"spectra": _spectra, "many": _many, "tem": _tem, "lpem": _lpem, "sem": _sem, "search": _search, "jobs": _jobs,
          "landed": _landed, "gateway": _gateway, "storage": _storage}


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a quick suite takes 1-3 minutes alone and several times that on a loaded machine
@pytest.mark.parametrize("suite", sorted(SUITES))
def test_the_quick_benchmark_of_each_suite_runs(suite, tmp_path):
    """One suite per test, each in its own process: a slow machine slows one test, not a single
    test that must fit every suite in one timeout."""
    run_module("bench", "--quick", "--suite", suite, "--out", str(tmp_path), timeout=1140)
    SUITES[suite](json.loads((tmp_path / f"{suite}.json").read_text()))


def test_every_suite_is_smoke_tested():
    from bench.__main__ import SUITES as RUN

    assert set(RUN) == set(SUITES)
