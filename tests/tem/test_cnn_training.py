"""Training-side pieces of the TEM U-Net: loss weights and the radius-spread calibration."""

import numpy as np
import pytest

from nanolens_tem.training.calibrate import fit_spread

torch = pytest.importorskip("torch")


def _targets(discs, shape=(64, 128)):
    """fg / boundary / dist / radius targets of separate discs ``(cy, cx, r)``."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    t = np.zeros((4, h, w), np.float32)
    for cy, cx, r in discs:
        inside = np.hypot(yy - cy, xx - cx) <= r
        t[0][inside] = 1
        t[3][inside] = r / 32
    return t


def test_instance_weights_favour_small_particles_and_leave_background_at_one():
    from nanolens_tem.training.cnn_train import instance_weights

    t = _targets([(32, 30, 4), (32, 90, 20)])
    w = instance_weights(t, max_weight=4.0, ref_radius=12.0)
    small, large = w[32, 30], w[32, 90]
    assert small == pytest.approx(min(4.0, np.sqrt(np.pi * 144 / (t[0][:, :60] > 0).sum())), rel=1e-5)
    assert large == 1.0  # larger than the reference: not down-weighted below 1
    assert w[t[0] == 0].max() == 1.0
    assert instance_weights(t, max_weight=2.0, ref_radius=12.0).max() == 2.0


def test_loss_ignores_pixels_of_zero_weight():
    from nanolens_tem.training.cnn_train import loss_fn

    t = torch.from_numpy(_targets([(32, 30, 8), (32, 90, 8)]))[None]
    out = torch.zeros(1, 4, 64, 128)
    wrong = out.clone()
    wrong[0, 2, :, 60:] = 5.0  # bad distance prediction on the right particle only
    w_all = torch.ones(1, 1, 64, 128)
    w_left = w_all.clone()
    w_left[..., 60:] = 0
    assert loss_fn(wrong, torch.cat([t, w_all], 1)) > loss_fn(out, torch.cat([t, w_all], 1)) + 1
    assert loss_fn(wrong, torch.cat([t, w_left], 1)) == pytest.approx(float(loss_fn(out, torch.cat([t, w_left], 1))))
    # unit weights give the unweighted loss
    assert loss_fn(wrong, torch.cat([t, w_all], 1)) == pytest.approx(float(loss_fn(wrong, t)))


def test_fit_spread_undoes_a_shrinkage_towards_the_mean():
    rng = np.random.default_rng(0)
    true_c = rng.normal(0, 0.25, 4000)
    pred_c = 0.8 * true_c + rng.normal(0, 0.05, 4000)
    fit = fit_spread(true_c, pred_c)
    assert fit["slope_pred_on_true"] == pytest.approx(0.8, abs=0.01)
    assert fit["residual_sd"] == pytest.approx(0.05, abs=0.005)
    # the spread factor restores the spread of the true sizes
    assert np.std(fit["radius_spread"] * pred_c) == pytest.approx(np.std(true_c), rel=1e-3)
    assert fit["n_particles"] == 4000
    with pytest.raises(ValueError, match="too few"):
        fit_spread(true_c[:5], pred_c[:5])


def test_matched_log_sizes_pairs_each_found_particle_with_its_truth():
    """With a segmenter that finds every particle but shrinks its size towards the image mean by
    0.8, the calibration recovers that slope and the factor that undoes it."""
    from nanolens_tem.science.segmentation import Segmentation
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate
    from nanolens_tem.training.calibrate import matched_log_sizes

    class Shrinking:
        def segment(self, image, radius_spread=1.0):
            s = truth[id(image)]
            centre = np.log(s.diameters).mean()
            d = np.exp(centre + 0.8 * (np.log(s.diameters) - centre))
            return Segmentation(s.labels, d, np.zeros((len(d), 2)))

    images = [generate(k, SynthParams(shape=(128, 128), gmd=18.0, gsd=1.3)) for k in (1, 2, 3)]
    truth = {id(s.image): s for s in images}
    true_c, pred_c = matched_log_sizes(Shrinking(), images)
    assert len(true_c) == sum(len(s.diameters) for s in images)  # the labels give every sphere its centre
    fit = fit_spread(true_c, pred_c)
    assert fit["slope_pred_on_true"] == pytest.approx(0.8, abs=0.02)
    assert fit["radius_spread"] == pytest.approx(1.25, abs=0.03)


def test_fit_detection_measures_what_a_segmenter_misses_and_its_weights_undo_it():
    """A segmenter that returns the true particles except those owning under half of their disc,
    whose pixels go to the nearest kept particle (as a watershed on the foreground would give
    them): the fitted table sees the loss, and its weights bring the GMD of the found particles
    back to that of all of them (in-sample: this checks the wiring, not how well it transfers)."""
    from scipy import ndimage as ndi

    from nanolens_tem.evaluation.metrics import psd_errors
    from nanolens_tem.evaluation.splits import eval_params
    from nanolens_tem.science.segmentation import Segmentation
    from nanolens_tem.synthetic.agglomerates import generate
    from nanolens_tem.training.calibrate import fit_detection

    class MissesHidden:
        def segment(self, image):
            s = truth[id(image)]
            owned = s.visible_area / (np.pi * s.diameters**2 / 4)
            keep = np.flatnonzero(owned >= 0.5)
            renumber = np.zeros(len(s.diameters) + 1, s.labels.dtype)
            renumber[keep + 1] = np.arange(1, len(keep) + 1)
            labels = renumber[s.labels]
            _, (rows, cols) = ndi.distance_transform_edt(labels == 0, return_indices=True)
            labels = np.where(s.labels > 0, labels[rows, cols], 0)
            return Segmentation(labels, s.diameters[keep], np.zeros((len(keep), 2)))

    images = [generate(k, eval_params((256, 256))) for k in range(40)]
    truth = {id(s.image): s for s in images}
    model = fit_detection(MissesHidden(), images, min_per_cell=1)
    assert model.n_particles.sum() == sum(len(s.diameters) for s in images)
    assert model.recall.min() < 0.7 and model.recall.max() == 1.0
    segs = [MissesHidden().segment(s.image) for s in images]
    found = np.concatenate([g.diameters for g in segs])
    weights = np.concatenate([model.weights(g.labels, g.diameters) for g in segs])
    true = np.concatenate([s.diameters for s in images])
    gmd_found, _ = psd_errors(found, true)
    gmd_weighted, _ = psd_errors(found, true, weights)
    assert gmd_found > 0.01 and abs(gmd_weighted) < gmd_found / 3


def test_manifest_carries_the_calibration_as_postprocessing():
    from nanolens_tem.training.cnn_train import manifest

    cal = {"radius_spread": 1.17, "n_particles": 900, "detection": {"recall": [[0.5]]}}
    m = manifest("tem-unet", "9.9.9", {}, {"source": "test"}, 8, calibration=cal)
    assert m["postprocessing"]["radius_spread"] == 1.17
    assert m["postprocessing"]["radius_spread_fit"]["n_particles"] == 900
    assert m["postprocessing"]["detection"] == {"recall": [[0.5]]}
    assert "detection" not in m["postprocessing"]["radius_spread_fit"] and "detection" in cal
    assert "postprocessing" not in manifest("tem-unet", "9.9.9", {}, {"source": "test"}, 8)


def test_widen_keeps_the_function_and_breaks_the_symmetry_of_the_copies():
    from nanolens_tem.training.cnn_train import UNet, unet_base, widen

    torch.manual_seed(0)
    narrow = UNet(4)
    narrow.train()
    for _ in range(3):  # non-trivial BatchNorm running statistics
        narrow(torch.randn(2, 1, 32, 32))
    narrow.eval()
    x = torch.randn(2, 1, 48, 64)
    wide = widen(narrow, 6).eval()
    assert unet_base(wide.state_dict()) == 6 and wide.enc[4][0].out_channels == 36
    with torch.no_grad():
        ref, same = narrow(x), wide(x)
        assert torch.allclose(same, ref, atol=1e-5)
        noisy = widen(narrow, 6, noise=0.05, seed=1).eval()(x)
    assert not torch.allclose(noisy, ref, atol=1e-5)  # the copies differ ...
    assert float((noisy - ref).abs().mean()) < 0.05 * float(ref.abs().mean())  # ... a little
    wide.train()  # in training, too, the copies see the statistics of their originals
    narrow.train()
    with torch.no_grad():
        assert torch.allclose(wide(x), narrow(x), atol=1e-4)
    with pytest.raises(ValueError, match="base-4 .* base 3"):
        widen(narrow, 3)


def test_bundle_reads_the_network_width_from_the_checkpoint(tmp_path):
    import json

    from nanolens_tem.training import bundle
    from nanolens_tem.training.cnn_train import UNet, export_onnx

    net = UNet(4).eval()
    torch.save(net.state_dict(), tmp_path / "model.pt")
    (tmp_path / "model.onnx").write_bytes(export_onnx(net))
    (tmp_path / "training_data.json").write_text(json.dumps({"source": "test", "n_items": 1, "sha256": "0" * 64}))
    assert bundle.main(["--work", str(tmp_path), "--out", str(tmp_path / "b"), "--version", "9.9.9"]) == 0
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert m["framework"]["unet_base"] == 4 and m["version"] == "9.9.9"
