"""Movie containers refuse frames above the limit by the size they declare, before any frame is
decoded (a zlib TIFF stack can inflate far beyond its file)."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from bench import bombs
from dmfile import dm_image
from nanolens_formats.movies import open_movie
from nanolens_runtime.errors import ResourceExhausted

FRAMES = np.zeros((3, 64, 80), np.uint8)


def test_frames_within_the_limit_are_read(tmp_path):
    path = tmp_path / "m.npy"
    np.save(path, FRAMES)
    movie = open_movie(path, "m.npy", max_frame_pixels=64 * 80)
    assert movie.shape == (64, 80) and sum(1 for _ in movie.frames) == 3


@pytest.mark.parametrize("name", ["m.npy", "m.tif", "m.dm4"])
def test_frames_above_the_limit_are_refused_naming_their_size(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".npy"):
        np.save(path, FRAMES)
    elif name.endswith(".tif"):
        tifffile.imwrite(path, FRAMES, compression="zlib", photometric="minisblack")
    else:
        path.write_bytes(dm_image(FRAMES, 0.5, "nm", version=4))
    with pytest.raises(ResourceExhausted, match="80 x 64 = 5120 pixels"):
        open_movie(path, name, max_frame_pixels=1000)


def test_a_tiff_bomb_is_refused_before_its_frame_is_inflated(tmp_path):
    path = tmp_path / "bomb.tif"
    path.write_bytes(bombs.tiff(20000, 20000))  # 800 KB declaring 800 MB
    with pytest.raises(ResourceExhausted, match="20000 x 20000"):
        open_movie(path, "bomb.tif", max_frame_pixels=16 << 20)
