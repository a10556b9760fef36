"""Decoders for microscope images: TIFF and Gatan DM3/DM4 (with the pixel size they state, read by
``calibration``), PNG/JPEG/BMP, ``.npy``.

The result is one greyscale H x W array and, when the file says so, its pixel size in nm.
Every failure is an ``InvalidArgument`` on ``input`` that says what is wrong; an image larger
than the configured limit is ``ResourceExhausted``, judged by the size the file declares before
anything is decompressed (a 490 KB PNG can inflate to 1.6 GiB).
"""

from __future__ import annotations

import io
import re
import tempfile
import warnings
from dataclasses import dataclass

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from nanolens_formats.calibration import length_nm, square_pixel_nm, tiff_pixel_size
from nanolens_formats.files import suffix_of
from nanolens_formats.npy import read_npy
from nanolens_runtime.arrays import require_micrograph_levels
from nanolens_runtime.errors import InvalidArgument, ResourceExhausted

TIFF_SUFFIXES = {".tif", ".tiff"}
DM_SUFFIXES = {".dm3", ".dm4"}
PIL_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp"}
MIN_SIDE = 16
@dataclass(frozen=True)
class DecodedImage:
    image: np.ndarray  # H x W, uint8 / uint16 / float32
    pixel_size_nm: float | None
    pixel_size_source: str  # one of nanolens_formats.calibration.SOURCES, "" when unknown
    # Whether the file's detector makes particles brighter than their background (SEM secondary or
    # backscattered electrons, dark-field STEM), darker (bright field), or None when it does not say
    bright_particles: bool | None = None
    detector: str = ""  # the detector as the file names it, e.g. "Zeiss HE-SE2", "FEI ETD (SE)"
    # bottom rows the metadata says are the instrument's information bar, not the scan; 0: it does not say
    info_bar_rows: int = 0


# Detector names that mean particles brighter than the background: secondary and backscattered
# electrons (SEM: SE, SE2, InLens, ETD, TLD, BSE, BSD, CBS, AsB, EsB) and dark-field STEM (ADF,
# HAADF, DF); bright-field names (BF) mean darker.
_BRIGHT = re.compile(r"^(se|bse|bsd|inlens|etd|tld|cbs|asb|esb|haadf|adf|df)\d*$")
_DARK = re.compile(r"^(bf|abf)\d*$")


def detector_contrast(name: str) -> bool | None:
    """True if a detector name means bright particles, False if dark, None if it does not tell."""
    tokens = [t for t in re.split(r"[^a-z0-9]+", name.lower().replace("in-lens", "inlens")) if t]
    if any(_DARK.match(t) for t in tokens) or "bright field" in name.lower():
        return False
    if any(_BRIGHT.match(t) for t in tokens):
        return True
    return None


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="input")


def _tiff_detector(tif: tifffile.TiffFile) -> str:
    """The detector named in FEI/Thermo or Zeiss SmartSEM metadata, or ""."""
    if tif.is_fei and tif.fei_metadata:
        det = tif.fei_metadata.get("Detectors", {})
        name, mode = str(det.get("Name", "")), str(det.get("Mode", ""))
        return f"FEI {name} ({mode})" if name or mode else ""
    if tif.is_sem and tif.sem_metadata:
        entry = tif.sem_metadata.get("dp_detector_channel") or tif.sem_metadata.get("dp_detector_type")
        if isinstance(entry, tuple) and len(entry) >= 2:
            return f"Zeiss {entry[1]}"
    return ""


def _too_large(what: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ResourceExhausted(f"{what} is {width} x {height} = {width * height} pixels, above the limit of "
                                f"{max_pixels}")


def _tiff_frame(tif: tifffile.TiffFile, what: str, max_pixels: int) -> tifffile.TiffPage:
    """The page of the one image of a TIFF. Frames are pages of one shape that are not reduced-resolution
    thumbnails; two or more is a stack (refused). A file may also hold one image twice, as a colour
    rendering and as the greyscale data (Olympus SIS): then the greyscale one is the image."""
    pages = [page for page in tif.pages if not page.is_reduced]
    grey = [page for page in pages if page.ndim == 2] or pages
    shapes = [page.shape for page in grey]
    if shapes.count(shapes[0]) > 1 or (len(pages) == 1 and pages[0].ndim == 3 and pages[0].shape[-1] not in (3, 4)):
        n = shapes.count(shapes[0]) if shapes.count(shapes[0]) > 1 else pages[0].shape[0]
        raise _bad(f"{what} is a stack of {n} images; need one 2D image (export a single frame; movies go to "
                   "the lpem analysis)")
    _too_large(what, grey[0].imagewidth, grey[0].imagelength, max_pixels)  # as declared, before decompressing
    return grey[0]


def _fei_bar_rows(tif: tifffile.TiffFile, rows: int) -> int:
    """FEI/Thermo store the scan's rows ([Image] ResolutionY) with their data bar appended below."""
    scanned = tif.fei_metadata.get("Image", {}).get("ResolutionY") if tif.is_fei and tif.fei_metadata else None
    return rows - scanned if isinstance(scanned, int) and 0 < scanned < rows else 0


def _tiff(data: bytes, what: str, max_pixels: int) -> tuple[np.ndarray, float | None, str, str, int]:
    """The first frame, its pixel size and that size's source, the detector the file names and the
    rows of its information bar the metadata states."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            page = _tiff_frame(tif, what, max_pixels)
            image = page.asarray()
            return (image, *tiff_pixel_size(tif, page, image.shape[-1]), _tiff_detector(tif),
                    _fei_bar_rows(tif, image.shape[0]))
    except (tifffile.TiffFileError, ValueError, KeyError, IndexError) as exc:
        raise _bad(f"{what} is not a readable TIFF ({exc})") from exc


def _dm(data: bytes, what: str, max_pixels: int) -> tuple[np.ndarray, float | None, str]:
    """Gatan DigitalMicrograph DM3/DM4 (ncempy; it reads from a file, so the bytes go to a
    temporary one). The pixel size comes from the spatial calibration of the image's two axes."""
    from ncempy.io.dm import fileDM  # imports h5py and matplotlib: only when a DM file arrives

    with tempfile.NamedTemporaryFile(suffix=".dm") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            with fileDM(tmp.name) as dm:
                if dm.numObjects == 0:
                    raise _bad(f"{what} holds no image (a DigitalMicrograph tag file without data)")
                for x, y, z in zip(dm.xSize, dm.ySize, dm.zSize, strict=False):  # as declared, before reading
                    _too_large(what, int(x), int(y) * int(z), max_pixels)
                dataset = dm.getDataset(0)
        except (InvalidArgument, ResourceExhausted):
            raise
        except Exception as exc:  # ncempy raises IOError, AssertionError, IndexError... on damaged files
            raise _bad(f"{what} is not a readable DM3/DM4 file ({type(exc).__name__}: {exc})") from exc
    image = np.asarray(dataset["data"])
    if image.ndim != 2:
        raise _bad(f"{what} holds a {image.ndim}-D dataset of shape {list(image.shape)}; need one 2D image "
                   "(export a single frame)")
    sizes, units = dataset.get("pixelSize", []), dataset.get("pixelUnit", [])
    if len(sizes) != 2 or len(units) != 2:
        return image, None, ""
    y_nm, x_nm = (length_nm(s, u) for s, u in zip(sizes, units, strict=True))
    if x_nm is None or y_nm is None:
        return image, None, ""  # uncalibrated (unit "") or not a length (e.g. 1/nm: a diffraction pattern)
    try:
        return image, square_pixel_nm(x_nm, y_nm), "DigitalMicrograph"
    except ValueError as exc:
        raise _bad(f"{what} has {exc}; particle sizing needs square pixels: resample the image first") from exc


def _pil(data: bytes, what: str, max_pixels: int) -> np.ndarray:
    try:
        with warnings.catch_warnings():  # PIL warns above 89 M pixels: the limit below is lower and refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
        with img:
            _too_large(what, *img.size, max_pixels)  # the header's size, before decompressing
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L"):
                return np.asarray(img, dtype=np.uint16)
            if img.mode == "P":
                img = img.convert("RGB")
            return np.asarray(img)
    except Image.DecompressionBombError as exc:  # PIL's own guard, at open, past twice its 89 M pixels
        raise ResourceExhausted(f"{what} declares more than {2 * Image.MAX_IMAGE_PIXELS} pixels, above the limit "
                                f"of {max_pixels}") from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise _bad(f"{what} is not a readable image ({exc})") from exc


def to_greyscale(image: np.ndarray, what: str) -> np.ndarray:
    """H x W, or H x W x 3/4 whose colour channels are equal; anything else is refused."""
    if image.ndim == 3 and image.shape[2] in (3, 4):
        rgb = image[..., :3]
        if not (np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])):
            raise _bad(f"{what} is a colour image; electron micrographs are greyscale (save one channel)")
        image = rgb[..., 0]
    if image.ndim != 2:
        raise _bad(f"{what} has shape {list(image.shape)}; need one greyscale H x W image")
    return image


def validate_image(image: np.ndarray, what: str, max_pixels: int) -> np.ndarray:
    if image.dtype == np.bool_:
        raise _bad(f"{what} is a boolean mask, not an image")
    if image.dtype.kind not in "uif":
        raise _bad(f"{what} has dtype {image.dtype}; need integers or floats")
    if min(image.shape) < MIN_SIDE:
        raise _bad(f"{what} is {image.shape[1]} x {image.shape[0]} px; need at least {MIN_SIDE} x {MIN_SIDE}")
    if image.size > max_pixels:
        raise ResourceExhausted(f"{what} has {image.size} pixels, above the limit of {max_pixels}")
    if image.dtype.kind == "f" and not np.isfinite(image).all():
        raise _bad(f"{what} contains NaN or Inf")
    require_micrograph_levels(image, "input", what)
    if image.dtype.kind == "i":
        image = image.astype(np.float32)
    elif image.dtype.kind == "f" and image.dtype != np.float32:
        image = image.astype(np.float32)
    elif image.dtype.kind == "u" and image.dtype.itemsize > 2:
        image = image.astype(np.float32)
    return np.ascontiguousarray(image)


def decode_image(data: bytes, key: str, max_pixels: int) -> DecodedImage:
    suffix = suffix_of(key)
    what = f"input {key!r}"
    if not data:
        raise _bad(f"{what} is empty (0 bytes)")
    pixel_size, source, detector, bar_rows = None, "", "", 0
    if suffix in TIFF_SUFFIXES:
        image, pixel_size, source, detector, bar_rows = _tiff(data, what, max_pixels)
    elif suffix in DM_SUFFIXES:
        # the reader needs a file on /tmp (a small emptyDir in the chart): refuse what cannot be one
        # image within the limit (8 bytes a pixel, plus tags) before writing it there
        if len(data) > max_pixels * 8 + 2**20:
            raise ResourceExhausted(f"{what} is {len(data)} bytes, more than one image of at most {max_pixels} "
                                    "pixels needs (a stack? export a single frame)")
        image, pixel_size, source = _dm(data, what, max_pixels)
    elif suffix in PIL_SUFFIXES:
        image = _pil(data, what, max_pixels)
    elif suffix == ".npy":  # at most an RGBA image of float64 at the pixel limit
        image = read_npy(io.BytesIO(data), what, max_pixels * 4 * 8)
    else:
        raise _bad(f"{what}: unknown image format {suffix or '(no extension)'}; "
                   f"use one of {sorted(TIFF_SUFFIXES | DM_SUFFIXES | PIL_SUFFIXES | {'.npy'})}")
    image = validate_image(to_greyscale(image, what), what, max_pixels)
    return DecodedImage(image, pixel_size, source, detector_contrast(detector) if detector else None, detector,
                        bar_rows)

