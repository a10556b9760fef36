"""What every analysis the gateway runs shares: its context (input, model, options, deadline) and its outcome."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from nanolens.common.v1 import common_pb2
from nanolens_gateway.results import Artefact
from nanolens_runtime.errors import Aborted
from nanolens_runtime.metrics import StageTimer
from nanolens_runtime.storage import ObjectInfo, ObjectStore

#: (stage, units done, units expected (0: unknown), what was found so far by name)
Progress = Callable[[str, int, int, dict[str, int]], None]


@dataclass
class AnalysisContext:
    """What one analysis needs: where the input is, which model, how long it may take."""

    store: ObjectStore
    source: ObjectInfo
    model: common_pb2.ModelInfo
    options: dict[str, str]
    timer: StageTimer
    deadline: float | None  # event-loop time by which the caller stops waiting
    block_bytes: int
    max_listed: int
    max_pixels: int
    service_timings: dict[str, float] = field(default_factory=dict)
    provenance: common_pb2.Provenance | None = None
    # called with (stage, done, total, counts) by analyses that report progress (AnalyzeStream);
    # None: nobody listens
    progress: Progress | None = None
    results_bucket: str = ""  # where analyses that keep state beside their result write it (SEM collections)
    data: bytes | None = None  # the input's bytes when the gateway holds them already (AnalyzeMany's inline items)
    by_reference_bytes: int = 0  # inputs this large a service reads itself by a presigned URL (0: none)

    def report(self, stage: str, done: int = 0, total: int = 0, **counts: int) -> None:
        """Tell a streaming caller how far the analysis is and what it has found so far, by name
        (``particles=...``); a no-op when nobody listens."""
        if self.progress is not None:
            self.progress(stage, done, total, counts)

    def remaining(self) -> float | None:
        return None if self.deadline is None else max(0.001, self.deadline - asyncio.get_running_loop().time())

    def absorb(self, provenance: common_pb2.Provenance) -> None:
        """Add a service response's stage times to this context's, after checking that the service ran
        the model the result's identity names (else the result would be stored under a lie)."""
        ran = (provenance.model_name, provenance.model_version, provenance.model_sha256)
        asked = (self.model.name, self.model.version, self.model.sha256)
        if provenance.model_name and ran != asked:
            raise Aborted(f"the {provenance.service_name or 'domain'} service ran {ran[0]}:{ran[1]} "
                          f"(sha256 {ran[2][:12]}) instead of {asked[0]}:{asked[1]} (sha256 {asked[2][:12]}); "
                          "nothing was stored, retry")
        if provenance.code_sha256 and self.model.code_sha256 and provenance.code_sha256 != self.model.code_sha256:
            raise Aborted(f"the {provenance.service_name or 'domain'} service runs other serving code (sha256 "
                          f"{provenance.code_sha256[:12]}) than its catalogue listed ({self.model.code_sha256[:12]}), "
                          "as during a rolling upgrade; nothing was stored, retry")
        self.provenance = provenance
        for timing in provenance.timings:
            self.service_timings[timing.stage] = self.service_timings.get(timing.stage, 0.0) + timing.seconds

    async def fetch(self) -> bytes:
        """The whole input object (inputs that must be decoded at once)."""
        if self.data is not None:
            return self.data
        src = self.source
        with self.timer.stage("fetch"):
            return await asyncio.to_thread(self.store.get, src.bucket, src.key, src.version_id)


@dataclass
class Outcome:
    summary: dict
    artefacts: list[Artefact]
