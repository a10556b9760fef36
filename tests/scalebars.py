"""Synthetic micrographs with a burned-in scale bar and its label, in the layouts instruments and
figures use, for the scale-bar reader's tests. Text is drawn with DejaVu Sans (Debian's
fonts-dejavu-core), as a real TrueType font renders it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
LAYOUTS = ("info bar", "split", "dark corner", "box")


def micrograph(shape: tuple[int, int], seed: int) -> np.ndarray:
    """Grey noise with darker round particles: something that is not a bar."""
    rng = np.random.default_rng(seed)
    h, w = shape
    image = rng.normal(150, 12, shape)
    rows, cols = np.mgrid[:h, :w]
    for _ in range(12):
        r, c, radius = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(6, 20)
        image[(rows - r) ** 2 + (cols - c) ** 2 < radius ** 2] -= 60
    return np.clip(image, 0, 255).astype(np.uint8)


def with_scale_bar(image: np.ndarray, layout: str, label: str | None, length_px: int, font_px: int = 18) -> np.ndarray:
    """``image`` with a scale bar ``length_px`` long (first to last pixel centre) and its ``label``
    (None: a bar without a label) drawn in ``layout``:

    - "info bar": a black strip below the micrograph, the white bar with end ticks under its label
      at the left, the beam's settings as other text (with a length: "WD = 8.5 mm") to the right;
    - "split": the black strip, the white bar split around its label at the right (FEI/Thermo);
    - "dark corner": a thick black bar at the bottom left of the micrograph, its label above;
    - "box": a black box at the bottom right holding a grey bar and the white label below it.
    """
    font = ImageFont.truetype(str(FONT), font_px)
    h, w = image.shape
    if layout in ("info bar", "split"):
        strip = 3 * font_px
        canvas = Image.new("L", (w, h + strip), 0)
        canvas.paste(Image.fromarray(image), (0, 0))
        draw = ImageDraw.Draw(canvas)
        top = h + font_px // 3
        if layout == "info bar":
            x0, y = 12, top + font_px + 6
            if label:
                draw.text((x0, top), label, fill=255, font=font)
            draw.rectangle((x0, y, x0 + length_px, y + 1), fill=255)
            draw.rectangle((x0, y - 5, x0 + 1, y + 6), fill=255)
            draw.rectangle((x0 + length_px - 1, y - 5, x0 + length_px, y + 6), fill=255)
            draw.text((x0 + length_px + 40, top), "EHT = 5.00 kV   WD = 8.5 mm", fill=255, font=font)
        else:
            x0, y = w - length_px - 12, top + font_px // 2
            text = label or ""
            text_w = draw.textlength(text, font=font) if text else length_px // 3
            middle = x0 + length_px / 2
            left, right = int(middle - text_w / 2 - 6), int(middle + text_w / 2 + 6)
            draw.rectangle((x0, y, left, y + 2), fill=255)
            draw.rectangle((right, y, x0 + length_px, y + 2), fill=255)
            if label:
                draw.text((left + 6, y - font_px // 2 - 2), label, fill=255, font=font)
            draw.text((12, top), "HV 5.00 kV   HFW 1.73 mm", fill=255, font=font)
        return np.asarray(canvas)
    canvas = Image.fromarray(image.copy())
    draw = ImageDraw.Draw(canvas)
    if layout == "dark corner":
        x0, y = 16, h - 16 - font_px // 2
        draw.rectangle((x0, y, x0 + length_px, y + max(4, font_px // 3)), fill=0)
        if label:
            draw.text((x0, y - font_px - 8), label, fill=0, font=ImageFont.truetype(str(FONT.with_name(
                "DejaVuSans-Bold.ttf")), font_px))
        return np.asarray(canvas)
    box_w, box_h = length_px + 40, 3 * font_px
    bx, by = w - box_w - 8, h - box_h - 8
    draw.rectangle((bx, by, bx + box_w, by + box_h), fill=0)
    draw.rectangle((bx + 20, by + 8, bx + 20 + length_px, by + 11), fill=200)
    if label:
        text_w = draw.textlength(label, font=font)
        draw.text((bx + box_w / 2 - text_w / 2, by + 16), label, fill=255, font=font)
    return np.asarray(canvas)
