"""Liquid-phase EM movies as frame iterators: TIFF and DM stacks, MP4/MOV/AVI/MKV, .npy T x H x W.

Frames are read as they are needed, so a movie larger than memory streams; a frame larger than
the caller's limit is refused by the size the container declares, before any frame is decoded."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nanolens_formats.calibration import length_nm, square_pixel_nm, tiff_pixel_size
from nanolens_formats.files import suffix_of
from nanolens_runtime.errors import InvalidArgument, ResourceExhausted

VIDEO = (".mp4", ".mov", ".avi", ".mkv")
TIFF = (".tif", ".tiff")
DM = (".dm3", ".dm4")


@dataclass
class Movie:
    """A decoded movie: its frame iterator and what the container says."""

    frames: Iterator[np.ndarray]
    n_frames: int  # 0: unknown
    shape: tuple[int, int]
    fps: float = 0.0
    pixel_size_nm: float = 0.0
    pixel_size_source: str = ""  # one of nanolens_formats.calibration.SOURCES, "" when unknown
    closers: list = field(default_factory=list)

    def close(self) -> None:
        for c in self.closers:
            c()


def _bad(message: str) -> InvalidArgument:
    return InvalidArgument(message, field="input")


def _frame_size(key: str, height: int, width: int, max_pixels: int) -> None:
    if max_pixels and height * width > max_pixels:
        raise ResourceExhausted(f"{key}: frames of {width} x {height} = {width * height} pixels are above the "
                                f"limit of {max_pixels}")


def open_movie(path: Path, key: str, max_frame_pixels: int = 0) -> Movie:
    """A frame iterator over a movie file (TIFF stack, MP4/MOV/AVI/MKV, DM3/DM4 stack, .npy T x H x W).

    Refuses with INVALID_ARGUMENT (field ``input``) what it cannot read, and with RESOURCE_EXHAUSTED
    frames above ``max_frame_pixels`` (0: no limit)."""
    suffix = suffix_of(key)
    try:
        if suffix == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            if array.ndim == 2:
                array = array[None]
            if array.ndim != 3 or array.dtype.kind not in "uif":
                raise _bad(f"{key}: a .npy movie must be a T x H x W numeric array, got shape {list(array.shape)} "
                           f"{array.dtype}")
            _frame_size(key, *array.shape[1:], max_frame_pixels)  # mapped, not read: nothing allocated yet
            return Movie((np.asarray(f) for f in array), array.shape[0], tuple(array.shape[1:]))
        if suffix in TIFF:
            import tifffile

            tif = tifffile.TiffFile(path)
            series = tif.series[0]
            shape = series.shape
            if len(shape) == 2:
                n, hw = 1, shape
            else:
                hw = shape[-2:]
                n = int(np.prod(shape[:-2]))
                if len(shape) > 3 and shape[-1] in (3, 4):
                    raise _bad(f"{key}: colour TIFF stacks are not movies of greyscale frames (shape {list(shape)})")
            if len(tif.series) > 1:  # pages written one by one (or of several sizes): every page is a frame
                n, hw = len(tif.pages), tif.pages[0].shape[:2]
            if max_frame_pixels:  # the largest page as declared, before any is decompressed
                frame = max(((p.keyframe.imagelength, p.keyframe.imagewidth) for p in tif.pages), key=np.prod)
                if frame[0] * frame[1] > max_frame_pixels:
                    tif.close()
                    _frame_size(key, *frame, max_frame_pixels)
            data = series.asarray(out="memmap") if len(tif.pages) < n else None

            def tiff_frames():
                if data is not None:
                    yield from (np.asarray(f) for f in np.reshape(data, (n, *hw)))
                else:
                    for page in tif.pages[:n]:
                        yield page.asarray()

            pixel, source = tiff_pixel_size(tif, tif.pages[0], int(hw[-1]))
            return Movie(tiff_frames(), n, tuple(hw), pixel_size_nm=pixel or 0.0, pixel_size_source=source,
                         closers=[tif.close])
        if suffix in DM:
            from ncempy.io.dm import fileDM  # imports h5py: only when a DM file arrives

            dm = fileDM(str(path))
            if dm.numObjects == 0 or (dm.thumbnail and dm.numObjects == 1):
                dm.fid.close()
                raise _bad(f"{key}: the DigitalMicrograph file holds no image")
            stack = dm.getMemmap(0)  # frames read from disk as they are needed
            if max_frame_pixels and stack.shape[-1] * stack.shape[-2] > max_frame_pixels:
                dm.fid.close()
                _frame_size(key, stack.shape[-2], stack.shape[-1], max_frame_pixels)
            axes = stack.ndim  # DM lists calibrations x, y(, t): the image's are the last ones
            if stack.ndim == 2:
                stack = stack[None]
            if stack.ndim != 3:
                dm.fid.close()
                raise _bad(f"{key}: a DM movie must be a T x H x W stack, got shape {list(stack.shape)}")
            x_nm, y_nm = (length_nm(dm.scale[i], dm.scaleUnit[i]) for i in (-axes, 1 - axes))
            try:
                pixel = square_pixel_nm(x_nm, y_nm) or 0.0
            except ValueError as exc:
                dm.fid.close()
                raise _bad(f"{key}: {exc}; particle tracking needs square pixels") from None
            return Movie((np.asarray(f) for f in stack), stack.shape[0], tuple(stack.shape[1:]),
                         pixel_size_nm=pixel, pixel_size_source="DigitalMicrograph" if pixel else "",
                         closers=[dm.fid.close])
        if suffix in VIDEO:
            import imageio_ffmpeg

            for attempt in range(3):  # imageio-ffmpeg waits 10 s for ffmpeg's header: a loaded machine misses it
                reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="gray", bits_per_pixel=8)
                try:
                    meta = next(reader)
                    break
                except OSError as exc:
                    if attempt == 2 or not str(exc).rstrip().endswith("=== stderr ==="):
                        raise
            w, h = meta["size"]
            if max_frame_pixels and w * h > max_frame_pixels:
                reader.close()
                _frame_size(key, h, w, max_frame_pixels)
            n = int(meta.get("n_frames") or 0) if np.isfinite(meta.get("n_frames") or 0) else 0

            def video_frames():
                for raw in reader:
                    yield np.frombuffer(raw, np.uint8).reshape(h, w)

            return Movie(video_frames(), n, (h, w), fps=float(meta.get("fps") or 0.0), closers=[reader.close])
    except (InvalidArgument, ResourceExhausted):
        raise
    except Exception as exc:  # every reader raises its own types for a broken container
        raise _bad(f"{key}: cannot read the movie ({type(exc).__name__}: {str(exc)[:200]})") from exc
    raise _bad(f"{key}: {suffix or 'no extension'} is not a movie format this gateway reads "
               f"(.tif/.tiff and .dm3/.dm4 stacks, {', '.join(VIDEO)}, .npy)")


def greyscale_frame(frame: np.ndarray, key: str, index: int) -> np.ndarray:
    if frame.ndim == 3 and frame.shape[-1] in (3, 4):
        frame = frame[..., :3].mean(axis=-1)
    if frame.ndim != 2:
        raise _bad(f"{key}: frame {index} has shape {list(frame.shape)}, not H x W")
    if frame.dtype.kind == "f":
        return frame.astype(np.float32)
    if frame.dtype.itemsize == 1 and frame.dtype.kind == "u":
        return frame
    if frame.dtype.kind in "ui" and frame.min(initial=0) >= 0 and frame.max(initial=0) <= 65535:
        return frame.astype(np.uint16)
    return frame.astype(np.float32)


def checked_frames(frames: Iterator[np.ndarray], key: str) -> Iterator[np.ndarray]:
    """The frames, a container broken part-way through refused like one broken at the start."""
    index = 0
    while True:
        try:
            frame = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # the readers' own exception types
            raise _bad(f"{key}: cannot read frame {index} ({type(exc).__name__}: {str(exc)[:200]})") from exc
        index += 1
        yield frame
