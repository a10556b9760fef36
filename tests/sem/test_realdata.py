"""The shipped autoencoder on the public real SEM images (NANOLENS_DATA); skipped when absent."""

from __future__ import annotations

import json

import onnxruntime as ort
import pytest

from nanolens_micrographs import detect_info_bar
from nanolens_runtime.bundles import ModelBundle
from nanolens_sem.bundles import latest_bundle
from nanolens_sem.evaluation import data
from nanolens_sem.evaluation.reconstruction import compare
from nanolens_sem.training.build_default import heldout_images
from nanolens_sem.training.train import training_images

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def root():
    found = data.sem_root()
    if found is None:
        pytest.skip(f"real SEM data not found under {data.data_root()} (set NANOLENS_DATA to ../shared/data)")
    return found


def test_no_information_bar_is_invented_on_real_micrographs(root):
    # none of these 125 images carries a bar (the DeepSEM tiles are crops; the lung-cell images were saved
    # without one): a detector that fires here would cut micrograph rows away
    items = data.deepsem_tiles(root) + data.lungcell_images(root)
    assert len(items) == 125
    assert [i.path.name for i in items if detect_info_bar(data.read_grey(i.path))] == []


def test_the_autoencoder_beats_pca_of_its_latent_size_on_tiles_it_never_saw(root):
    bundle = ModelBundle.load(latest_bundle("sem-autoencoder"))
    session = ort.InferenceSession(str(bundle.onnx_path), providers=["CPUExecutionProvider"])
    held = heldout_images()
    trained_on = set(bundle.manifest["training_data"]["source"].split("(")[1].split(":")[1].split(")")[0]
                     .replace(" ", "").split(","))
    assert not trained_on & {i.path.name for i in data.deepsem_tiles(root) if i.group not in data.TRAIN_SOURCES}
    images, _, _ = training_images()
    result = compare(session, images, held)
    assert result["n_test_tiles"] > 1000
    assert result["ae_psnr_db"] > result["pca_psnr_db"] + 1 and result["ae_ssim"] > result["pca_ssim"]


def test_a_lung_cell_head_calls_other_micrographs_unlike_every_class(root, tmp_path, capsys):
    from nanolens_sem.evaluation import novelty

    out = tmp_path / "novelty.json"
    assert novelty.main(["--out", str(out)]) == 0
    assert "AUROC" in capsys.readouterr().out
    result = json.loads(out.read_text())
    sets = {s["set"]: s for s in result["sets"]}
    assert set(sets) == {"TEM carbon black", "TEM gold", "TEM soot", "SEM GaAs nanowires", "SEM metal powder",
                         "SEM steel", "uniform noise"} and all(s["n"] > 0 for s in sets.values())
    assert result["in_domain"]["n"] >= 50 and result["head"]["n_train_images"] >= 20
    # The goals (measured 0.993, 93.3 % of 390 foreign, 3.7 % of 54 in domain).
    assert result["auroc"] >= 0.98 and result["foreign_flagged"] >= 0.90 and result["in_domain_flagged"] <= 0.05


def test_the_search_threshold_is_reproduced_and_tells_foreign_queries_nothing_is_similar(root, tmp_path):
    from nanolens_sem.evaluation import search

    out = tmp_path / "search.json"
    assert search.main(["--out", str(out)]) == 0
    result = json.loads(out.read_text())
    shipped = ModelBundle.load(latest_bundle("sem-autoencoder")).manifest
    assert abs(result["similar_above"] - shipped["metrics"][search.METRIC]) < 0.005  # the shipped calibration
    assert result["calibration"]["n_queries"] >= 60 and result["in_domain"]["n"] >= 50
    assert {f["set"] for f in result["foreign"]} == {"TEM carbon black", "TEM gold", "TEM soot", "SEM metal powder",
                                                     "SEM steel", "noise"}
    # measured: 0 of 59 in domain, 80 of 80 foreign, AUROC 1.0
    assert result["in_domain_nothing_similar"] <= 0.05 and result["foreign_nothing_similar"] >= 0.9
    assert result["auroc"] >= 0.98
