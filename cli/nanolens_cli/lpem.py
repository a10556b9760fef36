"""``nanolens analyze lpem``'s progress line: frames done of frames total, particles found, tracks,
drawn on stderr from the gateway's AnalyzeStream events (Ctrl-C cancels the analysis: the gateway
stores nothing)."""

from __future__ import annotations

import sys
import time


class ProgressLine:
    """``draw`` is an ``on_progress`` callback; drawn when stderr is a terminal, or ``enabled``."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()

    def draw(self, p) -> None:
        if not self.enabled:
            return
        width = 30
        filled = int(width * p.done / p.total) if p.total else 0
        bar = f"[{'#' * filled}{'.' * (width - filled)}] " if p.total else ""
        rate = p.done / max(time.monotonic() - self.start, 1e-6)
        found = "".join(f", {n} {name}" for name, n in sorted(p.counts.items()))
        sys.stderr.write(f"\r{p.stage}: {bar}{p.done}/{p.total or '?'} frames{found}, {rate:.1f} frames/s")
        sys.stderr.flush()

    def __enter__(self) -> ProgressLine:
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled and exc[0] is None:
            sys.stderr.write(f"\ranalyse: done in {time.monotonic() - self.start:.1f} s{' ' * 30}\n")
