"""Pictures that justify a number: class maps, probability maps, spectra with probabilities."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# Matplotlib's tab10, so the class colours match the spectra figure.
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


#: Pixels and spectra unlike the model's training data: their class is a guess, drawn in black.
OUT_OF_DOMAIN_COLOUR = (0, 0, 0)

_DRAWING = threading.Lock()
T = TypeVar("T")


def one_at_a_time(draw: Callable[..., T], *args) -> T:
    """``draw(*args)`` while no other picture is drawn with this. Adapters draw in worker threads to
    keep the event loop free, and matplotlib (pyplot's figures, its mathtext parser) is not
    thread-safe; pictures drawn with PIL alone need no lock (``font`` gives each thread its own)."""
    with _DRAWING:
        return draw(*args)


def class_colours(n: int) -> list[str]:
    return ["#{:02x}{:02x}{:02x}".format(*PALETTE[i % len(PALETTE)]) for i in range(n)]


def png_bytes(image: Image.Image, compress_level: int = 6) -> bytes:
    """PNG bytes; ``compress_level`` 1 is several times faster than the default 6 for large pictures."""
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=False, compress_level=compress_level)
    return out.getvalue()


def _upscale(image: Image.Image, min_side: int = 256) -> Image.Image:
    factor = map_scale(image.size[::-1], min_side)
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST) if factor > 1 else image


def map_scale(shape: tuple[int, ...], min_side: int = 256) -> int:
    """The whole-number factor a map of ``shape`` (H, W, ...) is enlarged by in its picture."""
    return max(1, min_side // max(1, min(shape[:2])))


# PIL pictures (a matplotlib figure costs about a quarter of a second) with matplotlib's own font.
TITLE_PX = 24  # the title row above a picture's content
PANEL = 144  # px, side of one map panel
BAR_WIDTH = 18


_FONTS = threading.local()  # a FreeType face is not thread-safe: one per thread and size


def font(size: int = 12) -> ImageFont.FreeTypeFont:
    fonts = _FONTS.__dict__
    if size not in fonts:
        fonts[size] = ImageFont.truetype(_font_path(), size)
    return fonts[size]


@cache
def _font_path() -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf")


@cache
def lut(name: str) -> np.ndarray:
    """A matplotlib colour map as a 256 x 3 uint8 lookup table."""
    from matplotlib import colormaps

    return (colormaps[name](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


def colourise(values: np.ndarray, vmin: float, vmax: float, cmap: str = "magma") -> np.ndarray:
    scaled = np.clip((values - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    return lut(cmap)[(scaled * 255).astype(np.uint8)]


def fit(rgb: np.ndarray, side: int, resample=Image.NEAREST) -> Image.Image:
    """An RGB array as a picture whose longer side is ``side``."""
    image = Image.fromarray(rgb)
    f = side / max(image.size)
    return image.resize((max(1, round(image.size[0] * f)), max(1, round(image.size[1] * f))), resample)


def colour_bar(height: int, vmin: float, vmax: float, cmap: str, label: str) -> Image.Image:
    """A vertical colour bar with its range and what it measures."""
    strip = lut(cmap)[np.linspace(255, 0, height).astype(np.uint8)][:, None].repeat(BAR_WIDTH, axis=1)
    bar = Image.new("RGB", (BAR_WIDTH + 80, height + 30), "white")
    bar.paste(Image.fromarray(strip), (0, 15))
    draw = ImageDraw.Draw(bar)
    draw.text((BAR_WIDTH + 4, 10), f"{vmax:.3g}", fill="black", font=font(11))
    draw.text((BAR_WIDTH + 4, height + 6), f"{vmin:.3g}", fill="black", font=font(11))
    draw.text((BAR_WIDTH + 4, height // 2 + 8), label[:12], fill="black", font=font(11))
    return bar


def panels_png(panels: list[tuple[Image.Image, str]], title: str, bar: Image.Image, cols: int) -> bytes:
    """Panels (at most PANEL px) in a grid, each under its caption, a title above and a colour bar beside."""
    rows = -(-len(panels) // cols)
    cell = PANEL + 6
    width = max(cols * cell + bar.size[0] + 10, round(font().getlength(title)) + 12)
    height = TITLE_PX + rows * (cell + 16)
    canvas = Image.new("RGB", (width, max(height, bar.size[1] + TITLE_PX)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((6, 5), title, fill="black", font=font())
    for i, (panel, caption) in enumerate(panels):
        x, y = 3 + (i % cols) * cell, TITLE_PX + (i // cols) * (cell + 16)
        draw.text((x, y), caption, fill="black", font=font(11))
        canvas.paste(panel, (x, y + 16))
    canvas.paste(bar, (cols * cell + 6, TITLE_PX))
    return png_bytes(canvas, compress_level=1)


def class_map_png(class_map: np.ndarray, class_names: list[str], out_of_domain: np.ndarray | None = None) -> bytes:
    """H x W class indices in the colours of ``class_colours`` under a title, with a legend naming
    each class and its share of the pixels; pixels where the H x W boolean ``out_of_domain`` is set
    are drawn in ``OUT_OF_DOMAIN_COLOUR``. The map starts TITLE_PX below the top-left corner,
    enlarged ``map_scale`` times."""
    h, w = class_map.shape
    indices = class_map.astype(np.uint8)
    colours = [PALETTE[i % len(PALETTE)] for i in range(max(len(class_names), 1))]
    entries = [(colours[i], f"{name}: {100 * float((indices == i).mean()):.1f} %")
               for i, name in enumerate(class_names)]
    if out_of_domain is not None and out_of_domain.any():
        entries = [(c, f"{name}: {100 * float(((indices == i) & ~out_of_domain).mean()):.1f} %")
                   for i, ((c, _), name) in enumerate(zip(entries, class_names, strict=True))]
        entries.append((OUT_OF_DOMAIN_COLOUR, f"out of domain: {100 * float(out_of_domain.mean()):.1f} %"))
        indices = np.where(out_of_domain, len(colours), indices).astype(np.uint8)
        colours.append(OUT_OF_DOMAIN_COLOUR)
    image = Image.fromarray(indices, mode="P")
    image.putpalette([c for colour in colours for c in colour])
    picture = _upscale(image).convert("RGB")
    legend_x = picture.width + 12
    text_width = max(round(font(11).getlength(text)) for _, text in entries)
    title = f"class of each pixel ({h} x {w} pixels)"
    width = max(legend_x + 22 + text_width + 8, round(font().getlength(title)) + 12)
    canvas = Image.new("RGB", (width, TITLE_PX + max(picture.height, 18 * len(entries) + 4)), "white")
    canvas.paste(picture, (0, TITLE_PX))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 5), title, fill="black", font=font())
    for i, (colour, text) in enumerate(entries):
        y = TITLE_PX + 4 + 18 * i
        draw.rectangle((legend_x, y, legend_x + 14, y + 12), fill=colour, outline=(120, 120, 120))
        draw.text((legend_x + 22, y - 1), text, fill="black", font=font(11))
    return png_bytes(canvas)


def probability_maps_png(probabilities: np.ndarray, class_names: list[str]) -> bytes:
    """H x W x K probabilities as K panels, one per class and named, on one colour scale (0-1)."""
    h, w, k = probabilities.shape
    panels = [(fit(colourise(probabilities[:, :, i], 0.0, 1.0, "viridis"), PANEL), name[:22])
              for i, name in enumerate(class_names)]
    bar = colour_bar(PANEL, 0.0, 1.0, "viridis", "probability")
    return panels_png(panels, f"probability of each class ({h} x {w} pixels)", bar, min(k, 4))


# spectra.png's layout (px): one row per spectrum, its trace on the left, its class probabilities
# as bars on the right, the x axes' labels below the last row.
SPECTRA_WIDTH = 860
ROW_PX = 96  # one spectrum's row
TRACE_BOX = (44, 568)  # x range of the traces' panels
NAMES_X = 578  # the class names beside the bars
BAR_BOX = (700, 846)  # x range of the probability bars (0 to 1)
ROW_PAD = 14  # above each row's panels: the out-of-domain label
AXIS_PX = 40  # tick labels and the axes' names under the last row


def spectra_png(spectra: np.ndarray, axis: np.ndarray | None, probabilities: np.ndarray,
                class_names: list[str], ood_scores: np.ndarray | None = None, max_rows: int = 6) -> bytes:
    """Up to ``max_rows`` spectra, each beside a bar chart of its class probabilities (every class
    named), titled "n of m shown" when some are left out; a spectrum whose out-of-domain score is
    above 1 is drawn in black and labelled so (its class is a guess). Drawn with PIL in the colours
    of ``_SPECTRA_PALETTE`` (a palette picture encodes several times faster than an RGB one), in
    about 2 ms (a matplotlib figure took 0.2 s); no lock: fonts are per thread."""
    rows = min(max_rows, len(spectra))
    x = np.asarray(axis if axis is not None else np.arange(spectra.shape[1]), np.float64)
    top = spectra_top(len(spectra), max_rows)
    canvas = Image.new("P", (SPECTRA_WIDTH, top + rows * ROW_PX + AXIS_PX), _WHITE)
    canvas.putpalette(_SPECTRA_PALETTE)
    draw = ImageDraw.Draw(canvas)
    small = font(11)
    if rows < len(spectra):
        label(canvas, (6, 5), f"{rows} of {len(spectra)} spectra shown (all in result.json and probabilities.npy)")
    (x0, x1), (b0, b1) = TRACE_BOX, BAR_BOX
    lo, hi = float(x.min()), float(x.max())
    span = hi - lo or 1.0
    ticks = [t for t in _nice_ticks(lo, hi) if lo <= t <= hi]
    grey = _GREY
    for i in range(rows):
        y0 = top + i * ROW_PX + ROW_PAD
        y1 = top + (i + 1) * ROW_PX - 4
        best = int(probabilities[i].argmax())
        outside = ood_scores is not None and ood_scores[i] > 1
        colour = _BLACK if outside else _CLASS + best % len(PALETTE)
        draw.rectangle((x0, y0, x1, y1), outline=grey)
        label(canvas, (6, (y0 + y1) // 2 - 7), f"#{i}", 11)
        if outside:
            label(canvas, (x0, y0 - ROW_PAD), f"out of domain (score {ood_scores[i]:.1f}): the class is a guess", 10)
        y = np.asarray(spectra[i], np.float64)
        y_lo, y_hi = float(np.nanmin(y)), float(np.nanmax(y))
        px = x0 + 2 + (x - lo) / span * (x1 - x0 - 4)
        py = y1 - 3 - (np.nan_to_num(y, nan=y_lo) - y_lo) / ((y_hi - y_lo) or 1.0) * (y1 - y0 - 6)
        draw.line(list(zip(px.tolist(), py.tolist(), strict=True)), fill=colour, width=1)
        for t in ticks:
            tx = x0 + 2 + (t - lo) / span * (x1 - x0 - 4)
            draw.line((tx, y1, tx, y1 + 3), fill=grey)
        k = len(class_names)
        bar_h = max(2, (y1 - y0 - 4) // max(k, 1))
        draw.rectangle((b0, y0, b1, y1), outline=grey)
        for j, name in enumerate(class_names):
            by = y0 + 2 + j * bar_h
            width = float(np.clip(probabilities[i, j], 0, 1)) * (b1 - b0)
            if width >= 1:
                draw.rectangle((b0, by + 1, b0 + round(width) - 1, by + bar_h - 2), fill=_CLASS + j % len(PALETTE))
            label(canvas, (NAMES_X, by + bar_h // 2 - 6), name[:20], 10)
    axis_y = top + rows * ROW_PX
    for t in ticks:
        tx = x0 + 2 + (t - lo) / span * (x1 - x0 - 4)
        text = f"{t:g}"
        label(canvas, (round(tx - small.getlength(text) / 2), axis_y), text, 11)
    for p in (0, 0.5, 1):
        text, tx = f"{p:g}", b0 + p * (b1 - b0)
        draw.line((tx, axis_y - 4, tx, axis_y - 1), fill=grey)
        label(canvas, (round(min(tx - small.getlength(text) / 2, b1 - small.getlength(text))), axis_y), text, 11)
    x_name = "Raman shift (cm\u207b\u00b9)" if axis is not None else "channel"
    label(canvas, (round((x0 + x1 - small.getlength(x_name)) / 2), axis_y + 18), x_name, 11)
    label(canvas, (round((b0 + b1 - small.getlength("probability")) / 2), axis_y + 18), "probability", 11)
    return png_bytes(canvas, compress_level=1)


# spectra.png's palette: white, black, the frames' grey, the class colours, then 16 greys from
# white to black that draw anti-aliased text on white
_WHITE, _BLACK, _GREY, _CLASS = 0, 1, 2, 3
_TEXT = _CLASS + len(PALETTE)
_SPECTRA_PALETTE = [255, 255, 255, *OUT_OF_DOMAIN_COLOUR, 110, 110, 110, *(c for colour in PALETTE for c in colour),
                    *(255 - 17 * k for k in range(16) for _ in range(3))]


def label(canvas: Image.Image, xy: tuple[int, int], text: str, size: int = 12) -> None:
    """Black text at ``xy`` (its top-left corner) on white, in an RGB picture or a
    ``_SPECTRA_PALETTE`` one; rendered once per text and size (FreeType's rendering is most of a
    small picture's cost)."""
    xy = (int(xy[0]), int(xy[1]))
    if canvas.mode == "P":
        shades, mask = _text_shades(text, size)
        canvas.paste(shades, xy, mask)
    else:
        canvas.paste((0, 0, 0), xy, _text_coverage(text, size))


@lru_cache(maxsize=4096)
def _text_coverage(text: str, size: int) -> Image.Image:
    face = font(size)
    right, bottom = face.getbbox(text)[2:]
    coverage = Image.new("L", (max(1, right), max(1, bottom)), 0)
    ImageDraw.Draw(coverage).text((0, 0), text, fill=255, font=face)
    return coverage


@lru_cache(maxsize=4096)
def _text_shades(text: str, size: int) -> tuple[Image.Image, Image.Image]:
    """The text as palette indices of its grey shades, and where it is drawn."""
    coverage = _text_coverage(text, size)
    level = (np.asarray(coverage, np.uint16) * 15 + 127) // 255  # 0 (none) .. 15 (black)
    shades = Image.frombytes("P", coverage.size, (_TEXT + level).astype(np.uint8).tobytes())
    return shades, Image.fromarray(np.where(level > 0, 255, 0).astype(np.uint8))


def spectra_top(n: int, max_rows: int = 6) -> int:
    """Where spectra.png's first row starts: below a title when it shows only some of the ``n`` spectra."""
    return TITLE_PX if n > max_rows else 4


def _nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    """Round numbers (1, 2 or 5 x 10^k apart) spanning lo..hi, about ``n`` of them."""
    raw = (hi - lo) / max(n - 1, 1) or 1.0
    magnitude = 10 ** np.floor(np.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = np.ceil(lo / step) * step
    return [round(float(v), 10) for v in np.arange(first, hi + step / 2, step)]


def npy_bytes(array: np.ndarray) -> bytes:
    out = io.BytesIO()
    np.save(out, array, allow_pickle=False)
    return out.getvalue()


def labels_tiff(labels: np.ndarray, pixel_size_nm: float | None = None) -> bytes:
    """uint16 instance labels (0 background, k particle k) as a compressed TIFF; with the input's
    pixel size as ImageJ calibration (nm), so the labels measure like the image they came from."""
    import tifffile

    out = io.BytesIO()
    if pixel_size_nm:
        tifffile.imwrite(out, labels.astype(np.uint16), compression="zlib", imagej=True,
                         resolution=(1 / pixel_size_nm, 1 / pixel_size_nm), metadata={"unit": "nm"})
    else:
        tifffile.imwrite(out, labels.astype(np.uint16), compression="zlib")
    return out.getvalue()


def to_uint8(image: np.ndarray) -> np.ndarray:
    """Grey image scaled to 0..255 between its 0.5th and 99.5th percentiles."""
    lo, hi = np.percentile(image, (0.5, 99.5))
    scaled = (np.asarray(image, np.float32) - lo) / max(float(hi - lo), 1e-6)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def overlay_png(image: np.ndarray, labels: np.ndarray, pixel_size_nm: float | None = None) -> bytes:
    """The micrograph in grey with every particle's outline: two pixels in a colour of the palette
    inside a black line, so it shows on bright and on dark particles; with a scale bar when the
    pixel size is known."""
    from skimage.segmentation import find_boundaries

    grey = to_uint8(image)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[find_boundaries(labels, mode="outer")] = 0
    first = find_boundaries(labels, mode="inner")
    edges = first | (find_boundaries(np.where(first, 0, labels), mode="inner") & (labels > 0))  # two rings in
    colours = np.array(PALETTE, dtype=np.uint8)
    rgb[edges] = colours[labels[edges].astype(np.int64) % len(PALETTE)]
    picture = Image.fromarray(rgb, mode="RGB")
    if pixel_size_nm:
        draw_scale_bar(picture, pixel_size_nm)
    return png_bytes(picture, compress_level=1)  # 2048 x 2048: 0.4 s, against 1.6 s at level 6 (a file as large)


def scale_bar_nm(width_px: int, pixel_size_nm: float) -> float:
    """A round length (1, 2 or 5 x 10^k nm) near a fifth of the image width."""
    target = width_px * pixel_size_nm / 5
    exponent = np.floor(np.log10(target))
    return float(max(m * 10 ** exponent for m in (1, 2, 5) if m * 10 ** exponent <= target))


def draw_scale_bar(picture: Image.Image, pixel_size_nm: float) -> None:
    """A white bar with a black edge and its length, in the bottom-right corner of ``picture``."""
    length_nm = scale_bar_nm(picture.width, pixel_size_nm)
    length_px = round(length_nm / pixel_size_nm)
    text = f"{length_nm:g} nm" if length_nm < 1000 else f"{length_nm / 1000:g} µm"
    size = max(11, picture.width // 40)
    thick = max(3, size // 3)
    margin = max(6, picture.width // 60)
    x1, y1 = picture.width - margin, picture.height - margin
    draw = ImageDraw.Draw(picture)
    text_width = font(size).getlength(text)
    box = (x1 - max(length_px, text_width) - 6, y1 - thick - size - 10, x1 + 4, y1 + 4)
    draw.rectangle(box, fill=(0, 0, 0))
    draw.rectangle((x1 - length_px + 1, y1 - thick + 1, x1, y1), fill=(255, 255, 255))  # corners inclusive
    draw.text((x1 - length_px / 2 - text_width / 2, y1 - thick - size - 6), text, fill=(255, 255, 255),
              font=font(size))


# psd.png's layout (px) and colours
PSD_SIZE = (560, 370)
PSD_BOX = (64, 46, 548, 318)  # the plot's left, top, right, bottom
FIT_COLOUR = (214, 39, 40)  # matplotlib's tab:red
INTERVAL_COLOUR = (218, 218, 232)  # bluish grey: no shade of black text on white
LEGEND_FRAME = (176, 176, 208)  # bluish: no shade of black text on white


@dataclass(frozen=True)
class PsdLayout:
    """Where psd.png puts things: the histogram (20 bins), the weighted one, the fitted curve as
    particles per bin, and the data ranges the plot box shows."""

    edges: np.ndarray
    counts: np.ndarray
    weighted: np.ndarray | None
    curve: tuple[np.ndarray, np.ndarray] | None
    x_range: tuple[float, float]
    y_max: float

    def x_px(self, d: float) -> float:
        left, _, right, _ = PSD_BOX
        return left + (d - self.x_range[0]) / (self.x_range[1] - self.x_range[0]) * (right - left)

    def diameter(self, x_px: float) -> float:
        left, _, right, _ = PSD_BOX
        return self.x_range[0] + (x_px - left) / (right - left) * (self.x_range[1] - self.x_range[0])

    def y_px(self, count: float) -> float:
        _, top, _, bottom = PSD_BOX
        return bottom - count / self.y_max * (bottom - top)


def psd_layout(diameters: np.ndarray, weights: np.ndarray | None, gmd: float, gsd: float) -> PsdLayout:
    if not diameters.size:
        return PsdLayout(np.zeros(0), np.zeros(0), None, None, (0.0, 1.0), 1.0)
    counts, edges = np.histogram(diameters, bins=20)
    weighted = None if weights is None else np.histogram(diameters, bins=edges, weights=weights)[0]
    curve = None
    if gmd > 0 and gsd > 1:  # the lognormal with this GMD and GSD, as particles per bin
        d = np.linspace(edges[0], edges[-1], 200)
        d = d[d > 0]
        sigma = np.log(gsd)
        pdf = np.exp(-0.5 * ((np.log(d) - np.log(gmd)) / sigma) ** 2) / (d * sigma * np.sqrt(2 * np.pi))
        total = diameters.size if weights is None else float(weights.sum())
        curve = (d, pdf * total * (edges[1] - edges[0]))
    tops = [counts.max(), *([weighted.max()] if weighted is not None else []),
            *([curve[1].max()] if curve is not None and curve[1].size else [])]
    pad = 0.04 * (edges[-1] - edges[0] or 1.0)
    return PsdLayout(edges, counts, weighted, curve, (float(edges[0] - pad), float(edges[-1] + pad)),
                     float(max(tops)) * 1.1 or 1.0)


def psd_png(diameters: np.ndarray, unit: str, gmd: float, gsd: float, method: str,
            weights: np.ndarray | None = None, gmd_ci: list[float] | None = None,
            gsd_ci: list[float] | None = None) -> bytes:
    """Histogram of primary-particle diameters with the lognormal fit (the GMD and GSD), the GMD
    and its 95 % interval; with occlusion weights (TEM CNN), the weighted histogram is drawn over
    the found particles' one and the fit is of the weighted distribution. Drawn with PIL (a few
    ms; a matplotlib figure took about 0.3 s); no lock."""
    layout = psd_layout(diameters, weights, gmd, gsd)
    canvas = Image.new("RGB", PSD_SIZE, "white")
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = PSD_BOX
    title = f"{method}: n = {diameters.size}"
    if weights is not None and diameters.size:
        title += f" (about {weights.sum():.0f} with hidden ones)"
    gmd_text = f"GMD = {gmd:.3g}" + (f" [{gmd_ci[0]:.3g}, {gmd_ci[1]:.3g}]" if gmd_ci else "") + f" {unit}"
    gsd_text = f"GSD = {gsd:.3g}" + (f" [{gsd_ci[0]:.3g}, {gsd_ci[1]:.3g}]" if gsd_ci else "")
    for row, text in enumerate((title, f"{gmd_text}, {gsd_text}" + (" (95 % intervals)" if gmd_ci or gsd_ci else ""))):
        label(canvas, (round((left + right - font(11).getlength(text)) / 2), 6 + 16 * row), text, 11)
    legend = []
    if diameters.size:
        if gmd_ci:
            lo, hi = (min(max(layout.x_px(v), left), right) for v in gmd_ci)
            draw.rectangle((lo, top + 1, max(lo, hi), bottom - 1), fill=INTERVAL_COLOUR)
        base = layout.y_px(0)
        for e0, e1, count in zip(layout.edges[:-1], layout.edges[1:], layout.counts, strict=True):
            if count:
                draw.rectangle((layout.x_px(e0) + 1, layout.y_px(count), layout.x_px(e1) - 1, base), fill=PALETTE[0])
        legend.append(("box", PALETTE[0], "found"))
        if layout.weighted is not None:
            steps = [(layout.x_px(layout.edges[0]), base)]
            for e0, e1, w in zip(layout.edges[:-1], layout.edges[1:], layout.weighted, strict=True):
                steps += [(layout.x_px(e0), layout.y_px(w)), (layout.x_px(e1), layout.y_px(w))]
            draw.line([*steps, (layout.x_px(layout.edges[-1]), base)], fill=(0, 0, 0), width=2)
            legend.append(("line", (0, 0, 0), "with hidden ones (weights)"))
        if layout.curve is not None:
            x, y = layout.curve
            draw.line([(layout.x_px(a), layout.y_px(b)) for a, b in zip(x, y, strict=True)], fill=FIT_COLOUR, width=2)
            legend.append(("line", FIT_COLOUR, "lognormal fit"))
        if gmd_ci:
            legend.append(("box", INTERVAL_COLOUR, "GMD, 95 % interval"))
        gx = layout.x_px(gmd)
        if left < gx < right:
            for y in range(top + 1, bottom, 8):  # dashed
                draw.line((gx, y, gx, min(y + 4, bottom)), fill=(0, 0, 0))
    draw.rectangle(PSD_BOX, outline=(0, 0, 0))
    small = font(11)
    for t in _nice_ticks(*layout.x_range):
        if layout.x_range[0] <= t <= layout.x_range[1]:
            x = layout.x_px(t)
            draw.line((x, bottom, x, bottom + 4), fill=(0, 0, 0))
            label(canvas, (round(x - small.getlength(f"{t:g}") / 2), bottom + 6), f"{t:g}", 11)
    for t in _nice_ticks(0.0, layout.y_max, 6):
        if 0 <= t <= layout.y_max:
            y = layout.y_px(t)
            draw.line((left - 4, y, left, y), fill=(0, 0, 0))
            label(canvas, (round(left - 7 - small.getlength(f"{t:g}")), round(y - 7)), f"{t:g}", 11)
    x_name = f"primary-particle diameter ({unit})"
    label(canvas, (round((left + right - font().getlength(x_name)) / 2), bottom + 24), x_name)
    y_name = _text_coverage("particles", 12).rotate(90, expand=True)
    canvas.paste((0, 0, 0), (6, round((top + bottom - y_name.height) / 2)), y_name)
    if legend:
        width = 34 + max(round(font(10).getlength(text)) for _, _, text in legend)
        x0, y0 = right - width - 8, top + 6
        draw.rectangle((x0, y0, right - 4, y0 + 16 * len(legend) + 4), fill="white", outline=LEGEND_FRAME)
        for i, (kind, colour, text) in enumerate(legend):
            y = y0 + 5 + 16 * i
            if kind == "box":
                draw.rectangle((x0 + 6, y + 1, x0 + 26, y + 9), fill=colour)
            else:
                draw.line((x0 + 6, y + 5, x0 + 26, y + 5), fill=colour, width=2)
            label(canvas, (x0 + 32, y - 1), text, 10)
    return png_bytes(canvas, compress_level=1)
