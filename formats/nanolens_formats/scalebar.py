"""The pixel size from a micrograph's burned-in scale bar, for images whose file states none.

A scale bar is a straight horizontal line or bar drawn at one grey level (white, black or a
flat grey), a few to a few hundred pixels long, standing out from the rows above and below it;
instruments draw it in their information bar, figures in a corner, often split around its label
(FEI/Thermo) or with end ticks (Zeiss). :func:`find_bars` finds such lines from the pixels;
:func:`read_scale_bar` reads the label next to each with Debian's ``tesseract`` (OCR, run as a
program: ``apt-get install tesseract-ocr``) and takes the first bar whose label is a length
("200 nm", "1 µm", "500nm", "2 um", "50 Å"). The length over the bar's pixels is the pixel size.

A bar is measured from its first to its last pixel (end ticks included), as instruments draw
it; the label is trusted as read: a misread digit gives a wrong size, so the result names the
label it read.
"""

from __future__ import annotations

import io
import re
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from nanolens_formats.calibration import length_nm

#: programs whose version decides results here: part of the result's identity (code_identity)
RESULT_PROGRAMS = ("tesseract",)
#: seconds one OCR run may take (a small crop: well under a second)
OCR_TIMEOUT_S = 20
#: candidate bars whose labels are read, most bar-like first
MAX_READS = 3
#: bars are looked for above this fraction of the height or below that one (information bars and
#: figure corners: a flat line inside the micrograph is rarely a scale bar)
BAND_TOP, BAND_BOTTOM = 0.1, 0.75
# what a label is written in: tesseract is held to these (no "i", "l" or "7" read for a "1" then;
# its word confidences are no guide: correct labels come back at 0)
_CHARACTERS = "0123456789.,nmuµμÅA"
# "200 nm", "1 µm", "500nm", "2 um", "0.5 μm", "50 Å": a number and a length unit. OCR reads the
# micro sign as u, µ, μ, or "p" + m rarely: only the unambiguous forms count (pm is a real unit).
_LABEL = re.compile(r"(?<![\d.,])(\d+(?:[.,]\d+)?)\s*(nm|[uµμ]m|mm|pm|Å|Å|A)(?![a-z])", re.IGNORECASE)


@dataclass(frozen=True)
class Bar:
    """A horizontal bar found in the pixels: rows ``row0..row1`` and columns ``col0..col1``, both
    inclusive; ``gap`` the columns of a label it is split around (FEI), else None."""

    row0: int
    row1: int
    col0: int
    col1: int
    gap: tuple[int, int] | None = None

    @property
    def length_px(self) -> int:
        """From the centre of its first pixel to that of its last (where an end tick's centre is)."""
        return self.col1 - self.col0


@dataclass(frozen=True)
class ScaleBarReading:
    """What the scale bar gave: the pixel size (None when not read), the bar and its label as read,
    and a warning when a bar was found but gave no pixel size."""

    pixel_size_nm: float | None
    bar: Bar | None = None
    label: str = ""
    warning: str = ""

    def summary(self) -> dict | None:
        """The result's ``image.scale_bar`` record: None when no bar was found."""
        if self.bar is None:
            return None
        return {"length_px": self.bar.length_px, "box": [self.bar.row0, self.bar.col0, self.bar.row1, self.bar.col1],
                "label": self.label, "warning": self.warning}


def _runs(flat: np.ndarray, min_len: int) -> list[tuple[int, int, int]]:
    """(row, first column, last column) of every horizontal run of True at least ``min_len`` long."""
    padded = np.zeros((flat.shape[0], flat.shape[1] + 2), np.int8)
    padded[:, 1:-1] = flat
    edges = np.diff(padded, axis=1)
    rows_s, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row-major order as the starts
    keep = ends - starts >= min_len
    return list(zip(rows_s[keep].tolist(), starts[keep].tolist(), (ends[keep] - 1).tolist(), strict=True))


def _bands(img: np.ndarray, tol: float, min_len: int) -> list[tuple[int, int, int, int]]:
    """(first row, last row, first column, last column) of every band of consecutive rows holding
    a run of one level (within ``tol``) over the same columns (+-1), at least ``min_len`` long."""
    flat = np.abs(np.diff(img, axis=1)) <= tol  # pixel c equals pixel c + 1
    by_row: dict[int, list[tuple[int, int]]] = {}
    for r, c0, c1 in _runs(flat, min_len - 1):
        by_row.setdefault(r, []).append((c0, c1 + 1))  # a run of diffs c0..c1 covers pixels c0..c1+1
    open_bands: dict[tuple[int, int], tuple[int, float]] = {}  # (c0, c1) -> (first row, level)
    bands = []
    for r in range(img.shape[0] + 1):
        still: dict[tuple[int, int], tuple[int, float]] = {}
        for c0, c1 in by_row.get(r, []):
            level = float(img[r, c0])  # the run is flat to within tol
            near = ((c0 + i, c1 + j) for i in (0, -1, 1) for j in (0, -1, 1))
            match = next((k for k in near if k in open_bands and abs(open_bands[k][1] - level) <= tol), None)
            still[(c0, c1)] = (open_bands.pop(match)[0], level) if match else (r, level)
        bands.extend((start, r - 1, c0, c1) for (c0, c1), (start, _) in open_bands.items())
        open_bands = still
    return bands


def _stands_out(img: np.ndarray, r0: int, r1: int, c0: int, c1: int, span: float) -> bool:
    """Whether 80 % of the row above the band and of the row below (or the next ones out: anti-
    aliasing) differ from the band's level by 15 % of the image's range or more."""
    h = img.shape[0]
    sides = [[r for r in rows if 0 <= r < h] for rows in ((r0 - 1, r0 - 2), (r1 + 1, r1 + 2))]
    if not all(sides):
        return False
    middle = (c0 + c1) // 2  # one column first: most flat runs lie in flat regions, not on a line
    if min(max(abs(img[r, middle] - img[r0, middle]) for r in rows) for rows in sides) <= 0.15 * span:
        return False
    level = float(img[r0:r1 + 1, c0:c1 + 1].mean())
    unlike = [max(float((np.abs(img[r, c0:c1 + 1] - level) > 0.15 * span).mean()) for r in rows) for rows in sides]
    return min(unlike) >= 0.8


def _split(a: Bar, b: Bar, img: np.ndarray, tol: float) -> Bar | None:
    """``a`` and ``b`` as one bar split around its label (FEI/Thermo: "---- 500 um ----"), or None:
    level with each other, lengths within 20 %, at one grey, a gap of at most three pieces."""
    gap, longer = b.col0 - a.col1 - 1, max(a.length_px, b.length_px)
    if not (0 < gap <= 3 * longer and abs(a.row0 - b.row0) <= 1 and abs(a.row1 - b.row1) <= 1
            and abs(a.length_px - b.length_px) <= 0.2 * longer):
        return None
    if abs(float(img[a.row0, a.col0:a.col1 + 1].mean()) - float(img[b.row0, b.col0:b.col1 + 1].mean())) > tol:
        return None
    return Bar(min(a.row0, b.row0), max(a.row1, b.row1), a.col0, b.col1, (a.col1 + 1, b.col0 - 1))


def find_bars(image: np.ndarray) -> list[Bar]:
    """Lines that may be a scale bar, most bar-like first (none: an empty list).

    A candidate is a band of 1 or more consecutive rows in the top tenth or bottom quarter of the
    image holding a run of one grey level (within 2 % of the image's range) over the same columns,
    2.5 % (at least 11 px) to 70 % of the width long, at most a quarter as thick as long and 5 %
    of the height, standing out from the rows above and below (:func:`_stands_out`). Two pieces
    level with each other around a gap are one bar split around its label (:func:`_split`)."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    span = float(img.max() - img.min())
    if span <= 0:
        return []
    tol = 0.02 * span
    pieces = []
    for r0, r1, c0, c1 in _bands(img, tol, max(11, round(0.025 * w))):
        length, thick = c1 - c0 + 1, r1 - r0 + 1
        if (length > 0.7 * w or thick > max(2, length / 4) or thick > max(2, 0.05 * h)
                or BAND_TOP * h < r0 < BAND_BOTTOM * h):
            continue
        if _stands_out(img, r0, r1, c0, c1, span):
            pieces.append(Bar(r0, r1, c0, c1))
    bars = pieces + [bar for a in pieces for b in pieces if b is not a and (bar := _split(a, b, img, tol))]
    # split bars first (their label sits in the gap), then the lowest (bars sit at the bottom), longest
    bars.sort(key=lambda bar: (bar.gap is None, -bar.row1, -bar.length_px))
    return bars


def _crop(image: np.ndarray, bar: Bar) -> tuple[np.ndarray, int, int, float]:
    """The neighbourhood of a bar where its label is, cleaned for the OCR: black glyphs on white,
    the bar, frame lines and anything touching the crop's edge (the micrograph beside the label)
    removed. Returns it with its top-left corner in the image and the glyphs' median height.

    A bar drawn on a flat panel (an information bar, a box) has its label on the panel: the crop
    keeps to the panel, and ink is what lies past the midpoint between the bar's level and the
    panel's. A bar drawn on the micrograph has its label drawn in its own grey: ink is what lies
    within a third of the way from the bar's level to the micrograph's."""
    img = np.asarray(image, dtype=np.float32)
    h, w = img.shape
    span = float(img.max() - img.min())
    length, thick = bar.length_px, bar.row1 - bar.row0 + 1
    margin_v = int(max(3 * thick, 0.5 * length, 20))
    margin_h = int(max(0.5 * length, 20))
    r0, r1 = max(0, bar.row0 - margin_v), min(h, bar.row1 + 1 + margin_v)
    c0, c1 = max(0, bar.col0 - margin_h), min(w, bar.col1 + 1 + margin_h)
    level = float(img[bar.row0:bar.row1 + 1, bar.col0:bar.col1 + 1].mean())
    around = np.concatenate([img[max(0, bar.row0 - 3):bar.row0, bar.col0:bar.col1 + 1].ravel(),
                             img[bar.row1 + 1:bar.row1 + 4, bar.col0:bar.col1 + 1].ravel()])
    background = float(np.median(around))
    panel = np.abs(img[r0:r1, c0:c1] - background) <= 0.05 * span
    if float((np.abs(around - background) <= 0.05 * span).mean()) >= 0.9:  # on a flat panel: keep to it
        parts, _ = ndimage.label(panel)
        middle = (bar.col0 + bar.col1) // 2 - c0
        beside = [r - r0 for r in (bar.row0 - 1, bar.row1 + 1) if r0 <= r < r1 and panel[r - r0, middle]]
        if beside:  # the panel is the flat region the bar touches
            rows, cols = ndimage.find_objects(parts)[parts[beside[0], middle] - 1]
            r0, r1, c0, c1 = r0 + rows.start, r0 + rows.stop, c0 + cols.start, c0 + cols.stop
        threshold = (level + background) / 2
    else:
        threshold = level + (background - level) / 3
    crop = img[r0:r1, c0:c1]
    ink = crop >= threshold if level > threshold else crop <= threshold
    pieces = [(bar.col0, bar.gap[0]), (bar.gap[1] + 1, bar.col1 + 1)] if bar.gap else [(bar.col0, bar.col1 + 1)]
    for start, stop in pieces:  # the bar itself, not the label in its gap
        ink[bar.row0 - r0:bar.row1 - r0 + 1, start - c0:stop - c0] = False
    labels, _ = ndimage.label(ink)
    heights = []
    for index, box in enumerate(ndimage.find_objects(labels), start=1):
        tall, wide = box[0].stop - box[0].start, box[1].stop - box[1].start
        edge = box[0].start == 0 or box[1].start == 0 or box[0].stop == ink.shape[0] or box[1].stop == ink.shape[1]
        if edge or wide > 0.8 * length or tall > max(0.8 * length, 12):  # not a glyph: micrograph, frame, tick row
            ink[box][labels[box] == index] = False
        elif tall >= 4 and (labels[box] == index).sum() >= 8:  # a glyph, not a speck or a decimal point
            heights.append(tall)
    glyph = float(np.median(heights)) if heights else 0.0
    return np.where(ink, 0, 255).astype(np.uint8), r0, c0, glyph


def _ocr(crop: np.ndarray, scale: float, tesseract: str, psm: str) -> list[tuple[str, float, float]]:
    """Length labels tesseract reads in the crop: (label, centre row, centre column) in crop pixels."""
    picture = Image.fromarray(crop)
    if scale != 1:
        size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
        picture = picture.resize(size, Image.LANCZOS)
    picture = Image.fromarray(np.pad(np.asarray(picture), 10, constant_values=255))  # a quiet margin
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    done = subprocess.run([tesseract, "stdin", "stdout", "--psm", psm, "-l", "eng", "-c",
                           f"tessedit_char_whitelist={_CHARACTERS}", "tsv"], input=buffer.getvalue(),
                          capture_output=True, timeout=OCR_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise OSError(done.stderr.decode(errors="replace").strip()[-300:] or f"tesseract exited {done.returncode}")
    lines: dict[tuple[str, str, str], list[tuple[str, int, int, int, int]]] = {}
    for row in done.stdout.decode(errors="replace").splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) == 12 and cells[0] == "5" and cells[11].strip():
            left, top, width, height = (int(v) for v in cells[6:10])
            lines.setdefault((cells[2], cells[3], cells[4]), []).append(
                (cells[11].strip(), left, top, width, height))
    found = []
    for words in lines.values():
        text, spans = "", []
        for word, left, top, width, height in words:
            start = len(text) + (1 if text else 0)
            text = f"{text} {word}" if text else word
            spans.append((start, len(text), left, top, width, height))
        for match in _LABEL.finditer(text):
            inside = [s for s in spans if s[0] < match.end() and s[1] > match.start()]
            left = min(s[2] for s in inside)
            right = max(s[2] + s[4] for s in inside)
            top = min(s[3] for s in inside)
            bottom = max(s[3] + s[5] for s in inside)
            centre_r, centre_c = ((top + bottom) / 2 - 10) / scale, ((left + right) / 2 - 10) / scale
            found.append((f"{match.group(1)} {match.group(2)}", centre_r, centre_c))
    return found


def label_nm(label: str) -> float | None:
    """A label's length in nm ("200 nm" -> 200, "1,5 µm" -> 1500), None when it is not one."""
    match = _LABEL.fullmatch(label.strip())
    if not match:
        return None
    unit = match.group(2)
    unit = "nm" if unit.lower() == "nm" else unit  # OCR's NM
    return length_nm(match.group(1).replace(",", "."), unit)


def read_scale_bar(image: np.ndarray) -> ScaleBarReading:
    """The pixel size the image's scale bar gives, or why it gives none.

    No bar found: no pixel size and no warning (most micrographs carry none). A bar found but not
    read (no tesseract, no label next to it, a label that is no length): no pixel size and a
    warning that says so."""
    bars = find_bars(image)
    if not bars:
        return ScaleBarReading(None)
    first = bars[0]
    where = f"{first.length_px} px at row {first.row0}, columns {first.col0}-{first.col1}"
    tesseract = shutil.which("tesseract")
    if tesseract is None:
        return ScaleBarReading(None, first, warning=f"a scale bar ({where}) was found but not read: tesseract is not "
                               "installed (apt-get install tesseract-ocr); give the pixel size")
    for bar in bars[:MAX_READS]:
        crop, top, left, glyph = _crop(image, bar)
        if not glyph:
            continue
        centre_r = (bar.row0 + bar.row1) / 2 - top
        centre_c = ((bar.gap[0] + bar.gap[1]) / 2 if bar.gap else (bar.col0 + bar.col1) / 2) - left
        for psm in ("6", "11"):  # a block of text, else sparse text
            try:  # tesseract reads glyphs about 30 px tall best
                labels = _ocr(crop, float(np.clip(30 / glyph, 0.5, 8)), tesseract, psm)
            except (OSError, subprocess.TimeoutExpired) as exc:
                return ScaleBarReading(None, bar, warning=f"a scale bar ({where}) was found but tesseract failed on "
                                       f"it ({type(exc).__name__}: {exc}); give the pixel size")
            # the label nearest the bar (an information bar holds other lengths: working distance, field width)
            labels.sort(key=lambda found: (found[1] - centre_r) ** 2 + (found[2] - centre_c) ** 2)
            for label, _, _ in labels:
                nm = label_nm(label)
                if nm:
                    return ScaleBarReading(nm / bar.length_px, bar, label)
    return ScaleBarReading(None, first, warning=f"a scale bar ({where}) was found but no length label could be read "
                           "next to it; give the pixel size")
