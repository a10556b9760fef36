"""Pictures a scientist can read: every class named in a legend with its share, named probability
panels on one colour scale with a colour bar, "n of m shown" when a figure shows a subset; pictures
drawn from many threads at once come out whole."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

from nanolens_gateway.adapters import pictures

NAMES = ["early_endosome", "late_endosome", "lysosome"]


def rgb(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def has_text(region: np.ndarray) -> bool:
    """Dark anti-aliased strokes: text was drawn there."""
    return bool(((region < 90).all(axis=2)).sum() > 20)


def test_class_map_has_a_title_and_a_legend_of_every_class_and_the_out_of_domain_pixels():
    class_map = np.zeros((32, 40), np.uint8)
    class_map[:, 10:20], class_map[:, 20:] = 1, 2
    outside = np.zeros_like(class_map, bool)
    outside[:4] = True
    picture = rgb(pictures.class_map_png(class_map, NAMES, outside))
    scale = pictures.map_scale(class_map.shape)
    top, width = pictures.TITLE_PX, class_map.shape[1] * scale
    # the map, enlarged under the title, in the class colours with the out-of-domain rows black
    shown = picture[top:top + 32 * scale:scale, :width:scale]
    want = np.array(pictures.PALETTE[:3], np.uint8)[class_map]
    want[outside] = pictures.OUT_OF_DOMAIN_COLOUR
    np.testing.assert_array_equal(shown, want)
    assert has_text(picture[:top])  # the title
    legend = picture[top:, width + 8:]
    for colour in [*pictures.PALETTE[:3], pictures.OUT_OF_DOMAIN_COLOUR]:
        swatch = (legend == np.array(colour, np.uint8)).all(axis=2)
        assert swatch.sum() >= 10 * 10, colour  # one square per class and one for out of domain
    assert has_text(legend[:, 24:])  # the names beside the squares
    assert picture.shape[1] < 900 and picture.shape[0] < 400


def test_probability_panels_are_named_and_share_one_colour_bar():
    rng = np.random.default_rng(0)
    probabilities = rng.dirichlet(np.ones(3), size=(20, 30)).astype(np.float32)
    picture = rgb(pictures.probability_maps_png(probabilities, NAMES))
    viridis = pictures.lut("viridis")
    cell = pictures.PANEL + 6
    for i in range(3):  # a caption over each panel, then the panel in viridis
        x = 3 + i * cell
        assert has_text(picture[pictures.TITLE_PX:pictures.TITLE_PX + 14, x:x + cell])
        centre = picture[pictures.TITLE_PX + 16 + 40, x + 40]
        assert np.abs(viridis.astype(int) - centre.astype(int)).sum(axis=1).min() <= 3
    bar = picture[pictures.TITLE_PX + 15:pictures.TITLE_PX + 15 + pictures.PANEL, 3 * cell + 6]
    np.testing.assert_array_equal(bar[0], viridis[255])  # 1 at the top
    np.testing.assert_array_equal(bar[-1], viridis[0])  # 0 at the bottom
    assert picture.shape[1] < 900


def _spectra_rows(picture: np.ndarray, n: int, rows: int):
    """(top, bottom) of each row's panels in spectra.png (inside their frames)."""
    top = pictures.spectra_top(n)
    return [(top + i * pictures.ROW_PX + pictures.ROW_PAD + 1, top + (i + 1) * pictures.ROW_PX - 5)
            for i in range(rows)]


def _count(region: np.ndarray, colour) -> int:
    return int((region == np.array(colour, np.uint8)).all(axis=-1).sum())


def test_the_spectra_picture_shows_each_spectrum_in_its_class_colour_beside_its_probabilities():
    rng = np.random.default_rng(1)
    axis = np.linspace(100, 3000, 200)
    spectra = rng.random((12, 200)).astype(np.float32)
    probabilities = rng.dirichlet(np.ones(3), size=12).astype(np.float32)
    ood = np.r_[np.full(11, 0.3), 4.0].astype(np.float32)
    many = rgb(pictures.spectra_png(spectra, axis, probabilities, NAMES, ood))
    assert many.shape == (pictures.TITLE_PX + 6 * pictures.ROW_PX + pictures.AXIS_PX, pictures.SPECTRA_WIDTH, 3)
    assert many.shape[1] <= 900
    assert has_text(many[:pictures.TITLE_PX])  # "6 of 12 spectra shown"
    (x0, x1), (b0, b1) = pictures.TRACE_BOX, pictures.BAR_BOX
    for i, (y0, y1) in enumerate(_spectra_rows(many, 12, 6)):
        trace = many[y0:y1, x0 + 1:x1]
        best = int(probabilities[i].argmax())
        assert _count(trace, pictures.PALETTE[best]) > 150, i  # the trace, in its class's colour
        assert all(_count(trace, pictures.PALETTE[j]) == 0 for j in range(3) if j != best)
        bar_h = (y1 - y0 + 2 - 4) // 3
        for j in range(3):  # each class's bar as long as its probability, on a 0..1 axis
            y = y0 + 1 + j * bar_h + bar_h // 2
            length = _count(many[y, b0:b1 + 1], pictures.PALETTE[j])
            assert abs(length - probabilities[i, j] * (b1 - b0)) <= 1.5, (i, j)
        assert has_text(many[y0:y1, pictures.NAMES_X:b0 - 2])  # the class names beside the bars
    below = many[-pictures.AXIS_PX:]
    assert has_text(below[:, x0:x1]) and has_text(below[:, b0 - 10:])  # Raman shift; probability

    few = rgb(pictures.spectra_png(spectra[-3:], axis, probabilities[-3:], NAMES, ood[-3:]))
    assert (few[:pictures.spectra_top(3)] == 255).all()  # every spectrum shown: no title
    rows = _spectra_rows(few, 3, 3)
    last = few[rows[2][0]:rows[2][1], x0 + 1:x1]
    assert _count(last, pictures.OUT_OF_DOMAIN_COLOUR) > 150  # out of domain: drawn in black ...
    assert all(_count(last, colour) == 0 for colour in pictures.PALETTE[:3])
    label_above = [few[y0 - pictures.ROW_PAD:y0 - 1, x0:x1] for y0, _ in rows]
    assert has_text(label_above[2]) and not has_text(label_above[1])  # ... and labelled so, alone


def test_overlay_outlines_show_on_bright_and_dark_particles_and_a_scale_bar_gives_the_length():
    image = np.full((200, 300), 0.5, np.float32)
    labels = np.zeros((200, 300), np.uint16)
    yy, xx = np.mgrid[:200, :300]
    for k, (cy, cx, value) in enumerate([(60, 60, 1.0), (60, 160, 0.0)], start=1):  # a bright and a dark one
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 30 ** 2
        image[disc], labels[disc] = value, k
    plain = rgb(pictures.overlay_png(image, labels))
    scaled = rgb(pictures.overlay_png(image, labels, pixel_size_nm=2.0))
    for k in (1, 2):
        colour = np.array(pictures.PALETTE[k], np.uint8)
        row = plain[60, 60 + 100 * (k - 1) - 34:60 + 100 * (k - 1) - 24]  # across the left edge
        assert (row == colour).all(axis=1).sum() >= 2 and (row == 0).all(axis=1).any()  # colour, black beside
    assert pictures.scale_bar_nm(300, 2.0) == 100  # a fifth of 600 nm, rounded down to 1, 2 or 5 x 10^k
    corner = scaled[150:, 150:]
    white_rows = (corner == 255).all(axis=2).sum(axis=1)
    assert white_rows.max() == 50  # 100 nm at 2 nm/px
    assert has_text(np.where(corner == 255, 0, 255).astype(np.uint8))  # "100 nm" in white on black
    assert not (plain[150:, 150:] == 255).all(axis=2).any()  # no bar without a pixel size


def test_the_size_distribution_draws_its_lognormal_fit_and_the_gmd_interval():
    rng = np.random.default_rng(2)
    d = np.exp(rng.normal(np.log(20.0), np.log(1.25), 400))
    layout = pictures.psd_layout(d, None, 20.1, 1.24)
    picture = rgb(pictures.psd_png(d, "nm", 20.1, 1.24, "cnn", None, [19.6, 20.6], [1.22, 1.27]))
    left, top, right, bottom = pictures.PSD_BOX
    assert has_text(picture[:top]) and has_text(picture[bottom + 4:]) and has_text(picture[:, :left - 30])
    legend = np.argwhere((picture == np.array(pictures.LEGEND_FRAME, np.uint8)).all(axis=2))
    (y0, x0), (y1, x1) = legend.min(axis=0), legend.max(axis=0)
    plot = picture.copy()
    plot[y0:y1 + 1, x0:x1 + 1] = 255
    plot = plot[top + 1:bottom, left + 1:right]

    def where(colour) -> np.ndarray:
        return np.argwhere((plot == np.array(colour, np.uint8)).all(axis=2)) + [top + 1, left + 1]

    fit, bars = where(pictures.FIT_COLOUR), where(pictures.PALETTE[0])
    peak_y = fit[:, 0].min()
    peak_x = fit[fit[:, 0] == peak_y, 1].mean()
    assert 18 < layout.diameter(peak_x) < 21  # the fit peaks where the histogram does ...
    assert 0.7 < (bottom - peak_y) / (bottom - bars[:, 0].min()) < 1.3  # ... about as high
    band = where(pictures.INTERVAL_COLOUR)[:, 1]  # the GMD's interval, and nothing else
    assert abs(band.min() - layout.x_px(19.6)) <= 1.5 and abs(band.max() - layout.x_px(20.6)) <= 1.5
    swatches = picture[y0:y1 + 1, x0:x1 + 1]
    assert (swatches == pictures.INTERVAL_COLOUR).all(axis=2).sum() > 50  # named in the legend
    assert has_text(swatches[:, 30:])
    bare = rgb(pictures.psd_png(d, "px", 20.1, 1.24, "watershed"))
    assert not (bare == pictures.INTERVAL_COLOUR).all(axis=2).any()  # no interval: no band, no legend entry
    weighted = rgb(pictures.psd_png(d, "nm", 20.1, 1.24, "cnn", np.full(d.size, 1.5)))
    assert (weighted == 0).all(axis=2).sum() > (bare == 0).all(axis=2).sum() + 300  # the weighted histogram's outline
    empty = rgb(pictures.psd_png(np.zeros(0), "px", 0.0, 1.0, "watershed"))
    assert has_text(empty[:top]) and not (empty == np.array(pictures.PALETTE[0], np.uint8)).all(axis=2).any()


def test_the_msd_plot_is_in_nm2_and_seconds_when_pixel_size_and_frame_rate_are_known():
    from types import SimpleNamespace

    from nanolens_gateway.adapters.lpem import msd_figure

    lag = np.arange(1, 11, dtype=float)
    msd = {"lag": lag, "msd_px2": 4 * 0.5 * lag + 0.4}
    d = SimpleNamespace(d_px2_per_frame=0.5, localisation_var_px2=0.1)
    physical = msd_figure(msd, d, pixel_size=2.0, fps=10.0).axes[0]
    assert physical.get_xlabel() == "lag (s)" and physical.get_ylabel() == "MSD (nm$^2$)"
    points = physical.lines[0].get_xydata()
    np.testing.assert_allclose(points[0], [0.1, (2.0 + 0.4) * 4])  # 1 frame = 0.1 s; px^2 x 4 nm^2
    assert "D = 20 nm$^2$/s" in physical.get_legend().get_texts()[1].get_text()  # 0.5 px^2/frame x 4 x 10
    plain = msd_figure(msd, d).axes[0]
    assert plain.get_xlabel() == "lag (frames)" and plain.get_ylabel() == "MSD (px$^2$)"
    assert "D = 0.5 px$^2$/frame" in plain.get_legend().get_texts()[1].get_text()


def test_the_anomaly_title_fits_its_picture():
    from types import SimpleNamespace

    from nanolens_gateway.adapters.sem import anomaly_png

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)  # a small image: a narrow panel
    percentiles = np.full((4, 4), 75.0)
    picture = rgb(anomaly_png(image, percentiles, SimpleNamespace(image_percentile=99.97, anomalous_fraction=0.4321,
                                                                  block_px=16)))
    title = picture[:40]
    assert has_text(title)
    assert (title[:, -4:] == 255).all()  # white margin on the right: no line runs off the picture


def test_pictures_drawn_from_many_threads_at_once_all_come_out():
    """Adapters draw in worker threads (the event loop stays free); matplotlib is not thread-safe, so
    its pictures (LPEM's plots) go through ``one_at_a_time``; PIL's go without a lock, each thread
    with its own fonts."""
    rng = np.random.default_rng(0)
    spectra, probabilities = rng.random((6, 200)), rng.dirichlet(np.ones(3), size=6)

    def draw(i: int) -> bytes:
        if i % 3 == 0:
            return pictures.psd_png(rng.lognormal(2, 0.3, 50), "nm", 7.4, 1.3, "cnn", rng.random(50) + 1)
        if i % 3 == 1:
            return pictures.class_map_png(rng.integers(0, 3, (32, 40)).astype(np.uint8), NAMES)
        return pictures.spectra_png(spectra, np.linspace(100, 3000, 200), probabilities, NAMES,
                                    np.array([0.2, 3.0, 0.5, 0.1, 0.9, 2.0]))

    with ThreadPoolExecutor(8) as pool:
        drawn = list(pool.map(draw, range(24)))
    assert all(png.startswith(b"\x89PNG") and len(png) > 1000 for png in drawn)
    assert len({png for i, png in enumerate(drawn) if i % 3 == 2}) == 1  # the same spectra: the same picture


def test_the_trajectories_carry_a_scale_bar_when_the_pixel_size_is_known():
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from nanolens_gateway.adapters.lpem import trajectories_figure

    first = np.random.default_rng(0).integers(0, 255, (192, 192)).astype(np.uint8)
    tracks = {"track": np.array([1, 1, 2, 2]), "frame": np.array([0, 1, 0, 1]),
              "row": np.array([10.0, 12.0, 50.0, 49.0]), "col": np.array([10.0, 11.0, 80.0, 82.0])}
    summary = SimpleNamespace(tracks=2, frames=2, height=192, width=192)
    fig = trajectories_figure(first, tracks, summary, pixel_size=2.59)
    (bar,) = fig.axes[0].artists
    assert bar.txt_label.get_text() == "50 nm"  # a fifth of 497 nm, rounded down to 1, 2 or 5 x 10^k
    plt.close(fig)
    bare = trajectories_figure(first, tracks, summary)
    assert not bare.axes[0].artists
    plt.close(bare)
