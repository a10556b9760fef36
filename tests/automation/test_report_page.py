"""The job report as people read it: a summary that fits a 1,400-pixel window in headless Chromium
with every item's verdict and warnings shown, figures rounded with their units, thumbnails that keep
a 100-item report under 5 MB, and an index with verdict and unit columns."""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from nanolens.gateway.v1 import gateway_pb2
from nanolens_gateway.automation import report

N = 100


@functools.cache
def picture(seed: int) -> bytes:
    """A busy 900 x 600 plot-sized PNG (noise compresses badly: the worst case for size)."""
    pixels = np.random.default_rng(seed).integers(0, 255, (600, 900, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def job():
    items, docs = [], {}
    for i in range(N):
        state = "failed" if i == 7 else "done"
        items.append(SimpleNamespace(idx=i, bucket="raw", key=f"lab/run-2026-12-07/particles_{i:03d}.tif",
                                     version_id="", state=state, attempts=1,
                                     error="INVALID_ARGUMENT: not an image" if state == "failed" else "",
                                     result_bucket="results" if state == "done" else "",
                                     result_key=f"tem/{i:064x}/result.json" if state == "done" else ""))
        if state == "done":
            untrusted = i % 10 == 3
            docs[i] = {"n_particles": 40 + i, "method": "cnn",
                       "distribution": {"gmd_nm": 21.123456789 + i / 7, "gsd": 1.2345678912, "unit": "nm",
                                        "count": 40 + i, "gmd_px": 26.4, "dispersion_index": 0.1 * i},
                       "image": {"pixel_size_nm": 0.8, "height": 1024, "width": 1024, "pixel_size_source": "ImageJ"},
                       "coverage": {"fraction": 0.3, "touching_fraction": 0.01 * i, "mean_overlap_px2": 3.5 * i},
                       "quality": {"trustworthy": not untrusted, "contrast_to_noise": 4.56789,
                                   "warnings": ["contrast to noise 1.2 is below 3; edges are guesses"] if untrusted
                                   else []},
                       "artifacts": []}
    record = SimpleNamespace(id="job-1234", analysis=gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES,
                             options={"method": "cnn"}, model_name="tem-cnn", model_version="3", created=0.0,
                             submitted_by="alice", state="done", total=N, counts={"done": N - 1, "failed": 1},
                             items=items)
    return record, docs


@pytest.fixture(scope="module")
def page() -> bytes:
    record, docs = job()
    budget = report.PICTURE_BUDGET
    pictures = {}
    for i in docs:
        for name in ("overlay.png", "psd.png", "labels_preview.png"):
            data = report.thumbnail(picture(i % 3)) if budget > 0 else None
            budget -= len(data or b"")
            pictures.setdefault(i, []).append((name, "image/jpeg", data))
    return report.report_html(record, docs, pictures)


def test_a_hundred_items_stay_under_five_megabytes_with_a_thumbnail_of_every_picture(page):
    text = page.decode()
    assert len(page) < 5 << 20
    assert text.count("<img ") == 3 * (N - 1)  # every picture has its thumbnail
    # each links to the full picture where `nanolens results get --out` puts it beside the report
    assert "<a href='raw/lab/run-2026-12-07/particles_000.tif/overlay.png'><img " in text
    assert text.count("/psd.png'><img ") == N - 1


def test_figures_are_rounded_with_units_and_every_verdict_is_in_the_table(page):
    text = page.decode()
    summary = text[text.index("<table class='summary'>"):text.index("</table>", text.index("<table class='summary'>"))]
    assert "gmd_nm (nm)" in summary and "mean_overlap_px2 (px²)" in summary
    assert "21.12" in summary and "21.123456789" not in text
    assert "Same for every result: " in text and "pixel_size_nm = 0.8 nm" in text
    assert summary.count("<td class='verdict ") == N
    assert summary.count(">do not trust<") == 10 and summary.count(">trustworthy<") == N - 11
    assert summary.count("contrast to noise 1.2 is below 3; edges are guesses</div>") == 10  # whole, one line


def test_the_index_has_verdict_warnings_and_unit_columns():
    record, docs = job()
    rows = report.index_rows(record, docs)
    assert rows[3]["verdict"] == "do not trust" and rows[3]["warnings"].startswith("contrast to noise")
    assert rows[0]["verdict"] == "trustworthy" and rows[7]["verdict"] == "" and rows[7]["state"] == "failed"
    assert rows[0]["result.distribution.gmd_nm unit"] == "nm" and rows[0]["result.distribution.gmd_px unit"] == "px"
    assert "result.distribution.count unit" not in rows[0]  # a count has no unit
    header = report.index_csv(rows).decode().splitlines()[0].split(",")
    assert header.index("result.distribution.gmd_nm unit") == header.index("result.distribution.gmd_nm") + 1


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (make tools)")
def test_the_summary_fits_a_1400_pixel_window_in_headless_chromium(page, tmp_path):
    probe = ("<script>const t=document.querySelector('table.summary');const v=[...t.querySelectorAll('td.verdict')];"
             "document.body.insertAdjacentHTML('beforeend','<p id=probe>right='+Math.ceil(t.getBoundingClientRect()"
             ".right)+' scroll='+document.documentElement.scrollWidth+' shown='+v.filter(c=>c.getBoundingClientRect()"
             ".width>0&&c.textContent.length>0).length+'</p>');</script>")
    path = tmp_path / "report.html"
    path.write_bytes(page.replace(b"</body>", probe.encode() + b"</body>"))
    run = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1400,1000",
                          "--dump-dom", path.as_uri()], capture_output=True, text=True, timeout=120)
    found = re.search(r"right=(\d+) scroll=(\d+) shown=(\d+)", run.stdout)
    assert found, run.stderr[-2000:]
    right, scroll, shown = map(int, found.groups())
    assert right <= 1400 and scroll <= 1400, (right, scroll)
    assert shown == N - 1  # every done item's verdict is on screen (the failed one has none)
