"""What every reader needs to know of an object key."""

from __future__ import annotations

from pathlib import PurePosixPath


def suffix_of(key: str) -> str:
    """The key's extension, lower case (``.tif``), empty when it has none."""
    return PurePosixPath(key).suffix.lower()
