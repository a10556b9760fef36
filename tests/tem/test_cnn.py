import numpy as np
import pytest
from scipy import ndimage as ndi

from nanolens_tem.science.cnn import blend_window, instances_from_maps, tile_layout, tiled_predict


def _local_op(x):
    """A stand-in network: per-pixel local operator with a small support (4 channels)."""
    a = x[0, 0]
    g = ndi.gaussian_filter(a, 1.5, truncate=3.0, mode="reflect")
    return np.stack([g, a**2, -a, g * 2])[None].astype(np.float32)


def test_blend_window_ramps_sum_to_one():
    w = blend_window(128, 32)
    assert w.max() == 1.0
    # overlapping raised-cosine ramps of two neighbouring tiles add up to one
    assert w[-32:] + w[:32] == pytest.approx(np.ones(32), abs=2e-3)


@pytest.mark.parametrize("tile,overlap", [(512, 64), (128, 48), (96, 32), (256, 0)])
def test_tile_layout_covers_with_the_fewest_smallest_tiles(tile, overlap):
    for n in range(1, 3000, 7):
        size, starts = tile_layout(n, tile, overlap)
        assert size % 16 == 0 and size <= max(tile, -(-n // 16) * 16)
        if len(starts) == 1:
            assert n <= tile and starts == [0] and size >= n
            continue
        k = len(starts)
        assert starts[0] == 0 and starts[-1] + size == n                  # covers the axis, no padding
        assert min(np.diff(starts)) > 0 and size - max(np.diff(starts)) >= overlap
        assert (k - 1) * tile - (k - 2) * overlap < n                      # one tile fewer would not do
        assert k * (size - 16) - (k - 1) * overlap < n                     # nor k tiles 16 px smaller
    assert tile_layout(2048, 512, 64) == (464, [0, 396, 792, 1188, 1584])
    with pytest.raises(ValueError, match="overlap"):
        tile_layout(1000, 64, 64)


def test_tiled_equals_untiled_for_a_local_operator():
    rng = np.random.default_rng(0)
    x = ndi.gaussian_filter(rng.normal(size=(300, 270)), 2).astype(np.float32)
    whole = tiled_predict(_local_op, x, tile=512, overlap=32)
    tiled = tiled_predict(_local_op, x, tile=96, overlap=32)
    assert whole.shape == (4, 300, 270)
    interior = (slice(None), slice(8, -8), slice(8, -8))
    assert np.abs(whole - tiled)[interior].max() < 2e-3 * np.abs(whole).max()


def _disc_maps(discs, shape=(90, 200)):
    """Ideal output maps of discs ``(cy, cx, r)``; where discs overlap, a pixel goes to the disc
    in which it lies deeper."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    maps = np.zeros((4, h, w), np.float32)
    maps[0] = maps[1] = -10
    for cy, cx, r in discs:
        rho = np.hypot(yy - cy, xx - cx)
        inside = rho <= r
        d = np.clip(1 - rho / r, 0, 1)
        take = inside & (d > maps[2])
        maps[0][inside] = 10
        maps[2][take] = d[take]
        maps[3][take] = r / 32.0
    return maps


def test_instances_from_ideal_maps():
    """Two overlapping discs in ideal maps become two instances with the right radii."""
    maps = _disc_maps([(40, 40, 15), (40, 65, 12)], shape=(80, 120))
    seg = instances_from_maps(maps)
    assert seg.labels.max() == 2
    assert sorted(seg.diameters) == pytest.approx([24, 30], abs=0.5)


@pytest.fixture(scope="module")
def small_unet():
    torch = pytest.importorskip("torch")
    from nanolens_tem.training.cnn_train import UNet, export_onnx

    torch.manual_seed(0)
    m = UNet(base=4)
    # non-trivial batch-norm statistics
    m.train()
    with torch.no_grad():
        for _ in range(3):
            m(torch.randn(2, 1, 64, 64))
    m.eval()
    return m, export_onnx(m)


def test_onnx_matches_torch(small_unet):
    import onnxruntime as ort
    import torch

    model, onnx_bytes = small_unet
    x = np.random.default_rng(1).normal(size=(1, 1, 96, 160)).astype(np.float32)
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    assert got.shape == (1, 4, 96, 160)
    assert np.abs(got - want).max() < 1e-4


def test_tiled_network_has_no_seams(small_unet):
    """Tiled inference of a real U-Net approximates the untiled result on an image that fits in one tile."""
    import onnxruntime as ort

    from nanolens_tem.science.cnn import normalise
    from nanolens_tem.synthetic.agglomerates import generate

    _, onnx_bytes = small_unet
    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])

    def run(t):
        return sess.run(None, {"image": t.astype(np.float32)})[0]

    x = normalise(generate(5).image)
    whole = tiled_predict(run, x, tile=256, overlap=0)
    tiled = tiled_predict(run, x, tile=128, overlap=48)
    diff = np.abs(whole - tiled)
    scale = np.abs(whole).mean()
    assert diff.mean() < 0.05 * scale
    # no seam: the error along the tile borders is not concentrated there
    border = diff[:, :, 120:136].mean()
    assert border < 3 * diff.mean() + 1e-3


def test_serving_module_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, nanolens_tem.service, nanolens_tem.science.cnn, nanolens_tem.science.ann, "
            "nanolens_tem.science.baselines, nanolens_tem.science.features, nanolens_tem.science.occlusion;"
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    import nanolens_tem

    src = str(__import__("pathlib").Path(nanolens_tem.__file__).parents[1])
    r = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": src}, capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr.decode()


def test_radius_spread_widens_sizes_about_their_geometric_mean():
    maps = _disc_maps([(45, 30, 10), (45, 90, 15), (45, 160, 22)])
    plain = np.sort(instances_from_maps(maps).diameters)
    wide = np.sort(instances_from_maps(maps, radius_spread=1.5).diameters)
    assert plain == pytest.approx([20, 30, 44], abs=0.5)
    centre = np.log(plain).mean()
    assert np.log(wide).mean() == pytest.approx(centre, abs=1e-6)
    assert np.log(wide) - centre == pytest.approx(1.5 * (np.log(plain) - centre), abs=1e-6)
    # area sizing and single particles are left alone
    area = instances_from_maps(maps, diameter="area").diameters
    assert instances_from_maps(maps, diameter="area", radius_spread=1.5).diameters == pytest.approx(area)
    one = _disc_maps([(45, 90, 15)])
    assert instances_from_maps(one, radius_spread=1.5).diameters == pytest.approx([30], abs=0.5)
    # an instance the radius map gives no size stays at 0; the others widen about their own mean
    blank = maps.copy()
    blank[3][:, :60] = 0
    d = instances_from_maps(blank, radius_spread=1.5).diameters
    assert (d == 0).sum() == 1 and np.log(d[d > 0]).mean() == pytest.approx(np.log(plain[1:]).mean(), abs=1e-5)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="radius_spread"):
            instances_from_maps(maps, radius_spread=bad)


def test_segmenter_takes_radius_spread_from_the_bundle_postprocessing():
    from nanolens_tem.science.cnn import CnnSegmenter

    assert CnnSegmenter.from_session(None, {}).radius_spread == 1.0
    seg = CnnSegmenter.from_session(None, {"tile": 256}, {"radius_spread": 1.2})
    assert (seg.radius_spread, seg.tile) == (1.2, 256)


def test_test_time_augmentation_turns_every_view_back(small_unet):
    """The mean over the 8 rotations and reflections commutes with them, even for an untrained
    network that does not (an inverse applied the wrong way round breaks this), and it differs
    from a single view."""
    import onnxruntime as ort

    from nanolens_tem.science.cnn import CnnSegmenter
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    _, onnx_bytes = small_unet
    seg = CnnSegmenter(ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]), scale=1.0)
    image = generate(3, params=SynthParams(shape=(96, 128))).image
    maps = seg.predict_maps(image, tta=True)
    assert maps.shape == (4, 96, 128)
    turned = seg.predict_maps(np.ascontiguousarray(np.rot90(image)), tta=True)
    assert np.abs(turned - np.rot90(maps, axes=(1, 2))).max() < 1e-5
    mirrored = seg.predict_maps(np.ascontiguousarray(image[::-1]), tta=True)
    assert np.abs(mirrored - maps[:, ::-1]).max() < 1e-5
    single = seg.predict_maps(image)
    assert np.abs(single - maps).mean() > 1e-3
    assert seg.segment(image, tta=True).labels.shape == image.shape


def test_label_medians_match_scipy_for_odd_and_even_counts():
    from nanolens_tem.science.cnn import label_medians

    rng = np.random.default_rng(4)
    labels = rng.integers(0, 6, size=(40, 50))
    labels[0, :5] = [1, 2, 3, 4, 5]  # every label present
    values = rng.normal(size=labels.shape).astype(np.float32)
    want = ndi.median(values.astype(np.float64), labels, np.arange(1, 6))
    assert label_medians(values, labels, 5) == pytest.approx(want, abs=1e-12)
    assert {int(c) % 2 for c in np.bincount(labels.ravel())[1:]} == {0, 1}  # both kinds of count


@pytest.mark.parametrize("gmd", [16.0, 30.0, 44.0, 60.0])
def test_auto_scale_coarse_check_keeps_the_full_resolution_decision(gmd):
    """The binned estimate may only skip the full one where the full one says "no resampling"."""
    from nanolens_tem.science import cnn
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    image = generate(7, SynthParams(shape=(512, 512), gmd=(gmd, gmd), gsd=(1.15, 1.15),
                                    particles_per_agglomerate=(3, 12))).image
    full = cnn._radius(image, True)
    coarse = cnn._radius(image, True, binned=True)
    assert 0.85 * full < coarse < 1.3 * full
    want = cnn.TARGET_RADIUS / full if full > cnn.MAX_RADIUS else 1.0
    assert cnn.auto_scale(image) == pytest.approx(want, rel=1e-12)
    assert cnn.auto_scale(255 - image, dark_particles=False) == pytest.approx(want, rel=1e-12)


@pytest.fixture(scope="module")
def shipped_cnn():
    from nanolens_tem.bundles import latest_bundle
    from nanolens_tem.science.cnn import CnnSegmenter

    return CnnSegmenter.from_bundle(latest_bundle("tem-unet"), threads=1, scale="auto")


def _magnified(image: np.ndarray, m: float) -> np.ndarray:
    from nanolens_tem.science.cnn import resample

    shape = (round(image.shape[0] * m), round(image.shape[1] * m))
    return np.clip(resample(image.astype(np.float32), shape), 0, 255).astype(np.uint8)


def _gmd_count(seg, m: float) -> tuple[float, int]:
    from nanolens_tem.science.segmentation import geometric_stats

    d = seg.diameters[seg.diameters > 0]
    return geometric_stats(d)[0] / m, len(d)


def test_the_scale_chosen_from_the_image_makes_sizes_independent_of_magnification(shipped_cnn):
    """One synthetic specimen imaged at magnifications 0.5-4 (the pixel size scaled to match):
    the GMD in the specimen's units within 5 % and the count within 10 % of magnification 1, the
    factor chosen following the magnification. At the image's own scale the network splits the
    magnified particles: the check fails there."""
    import dataclasses

    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    image = generate(11, SynthParams(shape=(192, 192), gmd=(26.0, 26.0), gsd=(1.2, 1.2))).image
    one = shipped_cnn.segment(image)
    gmd, count = _gmd_count(one, 1.0)
    assert one.scale.source == "image" and count >= 10
    assert one.scale.typical_radius_px == pytest.approx(gmd / 2, rel=0.3)
    for m in (0.5, 2.0, 4.0):
        seg = shipped_cnn.segment(_magnified(image, m))
        g, n = _gmd_count(seg, m)
        assert g == pytest.approx(gmd, rel=0.05), m
        assert n == pytest.approx(count, rel=0.10), m
        assert seg.scale.factor * m == pytest.approx(one.scale.factor, rel=0.1), m
    fixed = dataclasses.replace(shipped_cnn, scale=1.0).segment(_magnified(image, 4.0))
    assert fixed.scale.source == "request" and fixed.scale.factor == 1.0
    g, n = _gmd_count(fixed, 4.0)
    assert not (abs(g / gmd - 1) <= 0.05 and abs(n / count - 1) <= 0.10)


def test_the_scale_search_reports_what_it_ran_and_stays_in_its_limits(shipped_cnn):
    """Noise holds no particle size: the search ends within its limits and passes, and says so."""
    from nanolens_tem.science import cnn

    noise = np.random.default_rng(5).integers(0, 256, (128, 128)).astype(np.uint8)
    choice = shipped_cnn.choose_scale(noise)
    assert choice.source == "image" and 1 <= choice.passes <= cnn.SCALE_PASSES
    assert cnn.SCALE_LIMITS[0] <= choice.factor <= cnn.SCALE_LIMITS[1]


def test_the_correlation_radius_follows_the_specimen():
    from nanolens_micrographs.scale import correlation_radius
    from nanolens_tem.science.cnn import normalise
    from nanolens_tem.synthetic.agglomerates import SynthParams, generate

    image = generate(12, SynthParams(shape=(256, 256), gmd=(20.0, 20.0), gsd=(1.15, 1.15))).image
    base, centre = correlation_radius(normalise(image))
    assert 5 < base < 40 and np.all((centre > 0) & (centre < 1))
    for m in (0.5, 2.0):
        r, c = correlation_radius(normalise(_magnified(image, m)))
        assert r / m == pytest.approx(base, rel=0.15)
        assert c == pytest.approx(centre, abs=0.03)
