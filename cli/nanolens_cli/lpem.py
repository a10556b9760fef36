"""``nanolens analyze lpem``: the movie analysis through the gateway's AnalyzeStream, with a
progress line (frames done of frames total, particles found, tracks) on stderr."""

from __future__ import annotations

import sys
import time

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2


def analyze_with_progress(client, ref: common_pb2.ObjectRef, analysis: int, model: str = "",
                          options: dict | None = None, force: bool = False, timeout: float | None = None,
                          progress: bool | None = None, on_progress=None) -> gateway_pb2.AnalyzeResponse:
    """Run an analysis through ``AnalyzeStream``; draw each progress event (when stderr is a
    terminal, or ``progress=True``) and pass it to ``on_progress``. Ctrl-C cancels the call, and
    with it the analysis (the gateway stores nothing)."""
    name, _, version = model.partition(":")
    request = gateway_pb2.AnalyzeRequest(input=ref, analysis=analysis, model_name=name, model_version=version,
                                         options=options or {}, force=force)
    draw = sys.stderr.isatty() if progress is None else progress
    start = time.monotonic()
    call = client.stub.AnalyzeStream(gateway_pb2.AnalyzeStreamRequest(request=request), timeout=timeout,
                                     metadata=client.metadata)
    try:
        for event in call:
            if event.WhichOneof("event") == "result":
                if draw:
                    sys.stderr.write(f"\ranalyse: done in {time.monotonic() - start:.1f} s{' ' * 30}\n")
                return event.result
            p = event.progress
            if on_progress is not None:
                on_progress(p)
            if draw:
                width = 30
                filled = int(width * p.done / p.total) if p.total else 0
                bar = f"[{'#' * filled}{'.' * (width - filled)}] " if p.total else ""
                rate = p.done / max(time.monotonic() - start, 1e-6)
                sys.stderr.write(f"\r{p.stage}: {bar}{p.done}/{p.total or '?'} frames, {p.particles_found} "
                                 f"particles, {p.tracks} tracks, {rate:.1f} frames/s")
                sys.stderr.flush()
    except KeyboardInterrupt:
        call.cancel()
        raise
    raise RuntimeError("the gateway ended the stream without a result")
