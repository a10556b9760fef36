"""``make models`` for TEM: the recipe in build_default is the one the shipped bundles came from,
and the chain runs (at a tiny scale: the full build takes hours)."""

import json

import pytest

from nanolens_runtime.bundles import ModelBundle
from nanolens_tem.bundles import BUNDLES
from support import require_train_extra

require_train_extra()

from nanolens_tem.training import build_default as bd  # noqa: E402


def _arg(argv, flag):
    return argv[argv.index(flag) + 1] if flag in argv else None


def test_the_recipe_is_the_one_the_shipped_unet_was_trained_with(tmp_path):
    shipped = json.loads((BUNDLES / "tem-unet" / bd.CNN_VERSION / "manifest.json").read_text())
    plan = bd.cnn_plan(tmp_path)
    for (before, _), (_, argv) in zip(plan, plan[1:], strict=False):
        assert _arg(argv, "--init") == str(before / "model.pt")  # each stage continues the last
    assert _arg(plan[0][1], "--init") is None
    final = plan[-1][1]
    assert int(_arg(final, "--base")) == shipped["framework"]["unet_base"]
    assert int(_arg(final, "--n-images")) + int(_arg(final, "--n-faceted")) == shipped["training_data"]["n_items"]
    assert f"at most {_arg(final, '--instance-weight')}x" in shipped["training_data"]["source"]
    assert "overlaps labelled 'deepest'" in shipped["training_data"]["source"]
    assert set(shipped["postprocessing"]) >= {"detection", "radius_spread"}  # calibrated, as the build does


def test_the_recipe_is_the_one_the_shipped_ann_was_trained_with():
    shipped = json.loads((BUNDLES / "tem-ann" / bd.ANN_VERSION / "manifest.json").read_text())
    assert f"{bd.ANN['n_images']} images" in shipped["training_data"]["source"]


@pytest.mark.slow
def test_the_chain_runs_and_writes_loadable_bundles(tmp_path):
    out = tmp_path / "bundles"
    stages = bd.CNN_STAGES[:2]
    cnn = bd.build_cnn(tmp_path / "work", out, scale=0.002, real_data=False, stages=stages, calibrated=False)
    second = tmp_path / "work" / stages[1].name
    assert sorted(p.name for p in second.glob("*.npz")) == sorted(
        p.name for p in (tmp_path / "work" / stages[0].name).glob("*.npz"))  # trained on the same images
    bundle = ModelBundle.load(cnn)
    assert (bundle.name, bundle.version) == ("tem-unet", bd.CNN_VERSION)
    assert bundle.manifest["metrics"]["synthetic_default_n_images"] == 2
    ann = ModelBundle.load(bd.build_ann(tmp_path / "work", out, scale=0.01))
    assert (ann.name, ann.version) == ("tem-ann", bd.ANN_VERSION)
