"""Typed views of what the gateway answers: results with their units, verdict, provenance and
artefacts by name; jobs and their items; object references."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2

#: a field's unit from its name's ending, as every result schema names them (``gmd_nm``,
#: ``d_um2_per_s``); the longest ending first
UNIT_SUFFIXES = (("_px2_per_frame", "px^2/frame"), ("_um2_per_s", "um^2/s"), ("_px2", "px^2"), ("_nm", "nm"),
                 ("_px", "px"), ("_db", "dB"), ("_bytes", "bytes"), ("_seconds", "s"))


def unit_of(name: str) -> str:
    """The unit a field's name declares (``diameter_nm`` -> ``nm``), empty when it names none."""
    if name == "seconds":
        return "s"
    return next((unit for suffix, unit in UNIT_SUFFIXES if name.endswith(suffix)), "")


@dataclass(frozen=True)
class Ref:
    """An object in the platform's storage."""

    bucket: str
    key: str
    version_id: str = ""

    @classmethod
    def of(cls, ref: common_pb2.ObjectRef) -> Ref:
        return cls(ref.bucket, ref.key, ref.version_id)

    def proto(self) -> common_pb2.ObjectRef:
        return common_pb2.ObjectRef(bucket=self.bucket, key=self.key, version_id=self.version_id)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass(frozen=True)
class Quantity:
    """A number with the unit its field declares; ``value`` is None where the analysis could not
    measure it (no pixel size: no nanometres)."""

    value: float | None
    unit: str

    def __float__(self) -> float:
        if self.value is None:
            raise ValueError(f"not measured (unit {self.unit})")
        return float(self.value)

    def __str__(self) -> str:
        return f"{self.value} {self.unit}".strip() if self.value is not None else f"not measured ({self.unit})"


@dataclass(frozen=True)
class Verdict:
    """Whether to trust a result: the result's ``quality`` block (particle sizes have one).
    ``measures``: the block's numbers (contrast_to_noise, coverage, ...)."""

    trustworthy: bool
    warnings: tuple[str, ...]
    measures: dict[str, Any]


@dataclass(frozen=True)
class Provenance:
    """What computed a result: the model (name, version, graph sha256, training data), the service
    and its code, the execution provider, and seconds per stage."""

    model_name: str
    model_version: str
    model_sha256: str
    model_training_data: str
    service_name: str
    service_version: str
    execution_provider: str
    timings: dict[str, float]

    @classmethod
    def of(cls, doc: dict) -> Provenance:
        return cls(doc.get("model_name", ""), doc.get("model_version", ""), doc.get("model_sha256", ""),
                   doc.get("model_training_data", ""), doc.get("service_name", ""), doc.get("service_version", ""),
                   doc.get("execution_provider", ""),
                   {t["stage"]: t["seconds"] for t in doc.get("timings", [])})


@dataclass(frozen=True)
class Artefact:
    """A file a result made (a picture, a table, an array); read it with ``client.artefact``."""

    name: str
    media_type: str
    ref: Ref
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class Result:
    """One analysis's stored result. ``document`` is the whole result.json (docs/reference/results.md);
    ``result["distribution"]`` reads it; ``quantity("distribution.gmd_nm")`` gives a number with
    its unit; ``cached``: it was stored already and not recomputed."""

    analysis: str
    identity: str
    input: Ref
    location: Ref
    cached: bool
    provenance: Provenance
    verdict: Verdict | None
    artefacts: dict[str, Artefact]
    document: dict = field(repr=False)

    @classmethod
    def of(cls, response: gateway_pb2.AnalyzeResponse) -> Result:
        doc = json.loads(response.result_json)
        return cls.from_document(doc, cached=response.cached, location=Ref.of(response.result), artefacts={
            a.name: Artefact(a.name, a.media_type, Ref.of(a.ref), a.size_bytes, a.sha256) for a in response.artifacts})

    @classmethod
    def from_document(cls, doc: dict, cached: bool = False, location: Ref | None = None,
                      artefacts: dict[str, Artefact] | None = None) -> Result:
        quality = doc.get("quality")
        verdict = None if quality is None else Verdict(
            bool(quality.get("trustworthy", not quality.get("warnings"))), tuple(quality.get("warnings", [])),
            {k: v for k, v in quality.items() if k not in ("trustworthy", "warnings")})
        if artefacts is None:
            artefacts = {a["name"]: Artefact(a["name"], a.get("media_type", ""), Ref(a["bucket"], a["key"]),
                                             a.get("size_bytes", 0), a.get("sha256", ""))
                         for a in doc.get("artifacts", [])}
        where = doc.get("result", {})
        return cls(analysis=doc["analysis"], identity=doc.get("identity", ""),
                   input=Ref(doc["input"]["bucket"], doc["input"]["key"], doc["input"].get("version_id", "")),
                   location=location or Ref(where.get("bucket", ""), where.get("key", "")), cached=cached,
                   provenance=Provenance.of(doc.get("provenance", {})), verdict=verdict, artefacts=artefacts,
                   document=doc)

    @property
    def trustworthy(self) -> bool:
        """False when the result's quality block raised a warning; True where there is none."""
        return self.verdict is None or self.verdict.trustworthy

    def __getitem__(self, key: str) -> Any:
        return self.document[key]

    def quantity(self, path: str) -> Quantity:
        """The number at a dotted path (``distribution.gmd_nm``) with its unit.

        Raises
        ------
        KeyError
            Naming the path when the result has no such field.
        """
        value: Any = self.document
        for part in path.split("."):
            if not isinstance(value, dict) or part not in value:
                raise KeyError(f"{self.analysis} result has no field {path!r}")
            value = value[part]
        if value is not None and not isinstance(value, int | float):
            raise KeyError(f"{path!r} is not a number: {value!r}")
        return Quantity(value, unit_of(path.rsplit(".", 1)[-1]))

    def quantities(self) -> dict[str, Quantity]:
        """Every number of the document (lists left out) whose field name declares a unit, by dotted path."""
        found: dict[str, Quantity] = {}

        def walk(node: dict, prefix: str) -> None:
            for key, value in node.items():
                path = f"{prefix}{key}"
                if isinstance(value, dict):
                    walk(value, f"{path}.")
                elif (value is None or isinstance(value, int | float)) and not isinstance(value, bool) \
                        and unit_of(key):
                    found[path] = Quantity(value, unit_of(key))

        walk({k: v for k, v in self.document.items() if k not in ("provenance", "input", "result")}, "")
        return found


@dataclass(frozen=True)
class Item:
    """One item for ``analyse_many``: ``data`` is a path, bytes (with ``filename``, whose extension
    tells the gateway the format) or a numpy array, sent inline, or a ``Ref`` to an object in
    storage; ``id`` is the caller's name for it, unique within the call. ``kind``, ``model``,
    ``force`` and ``options`` as ``analyse`` takes them."""

    id: str
    data: Any
    kind: str | int
    filename: str | None = None
    model: str = ""
    force: bool = False
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemResult:
    """The answer to one item of ``analyse_many``: its ``result``, or the ``error`` it alone failed
    with (a ``GatewayError`` naming the code and the field at fault)."""

    id: str
    result: Result | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class JobItem:
    object: Ref
    state: str
    attempts: int
    error: str
    result: Ref | None


@dataclass(frozen=True)
class Job:
    """A durable job and its counts; ``items`` only where asked for."""

    job_id: str
    analysis: str
    state: str
    created: str
    total: int
    pending: int
    running: int
    done: int
    failed: int
    cancelled: int
    submitted_by: str
    options: dict[str, str]
    items: tuple[JobItem, ...]

    #: the states a job does not leave
    FINAL = ("done", "failed", "cancelled")

    @classmethod
    def of(cls, job: gateway_pb2.Job) -> Job:
        items = tuple(JobItem(Ref.of(i.object), i.state, i.attempts, i.error,
                              Ref.of(i.result) if i.result.key else None) for i in job.items)
        kind = gateway_pb2.AnalysisKind.Name(job.analysis).removeprefix("ANALYSIS_KIND_").lower() \
            if job.analysis in gateway_pb2.AnalysisKind.values() else str(job.analysis)
        return cls(job.job_id, kind, job.state, job.created, job.total, job.pending, job.running, job.done,
                   job.failed, job.cancelled, job.submitted_by, dict(job.options), items)

    @property
    def finished(self) -> bool:
        return self.state in self.FINAL

    def as_dict(self) -> dict:
        """Plain data (for JSON)."""
        doc = {k: getattr(self, k) for k in ("job_id", "analysis", "state", "created", "total", "pending",
                                             "running", "done", "failed", "cancelled", "submitted_by", "options")}
        doc["items"] = [{"object": str(i.object), "state": i.state, "attempts": i.attempts, "error": i.error,
                         "result": str(i.result) if i.result else ""} for i in self.items]
        return doc


@dataclass(frozen=True)
class Upload:
    """What one upload stored."""

    path: str
    object: Ref
    size_bytes: int
    sha256: str


@dataclass(frozen=True)
class UploadProgress:
    """Where ``upload_folder`` is: files and bytes done of the totals, the file now being sent."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    current: str


@dataclass(frozen=True)
class JobResults:
    """What ``results(job, out_dir)`` wrote, and the items it could not (not done)."""

    job_id: str
    state: str
    written: tuple[Path, ...]
    not_done: tuple[JobItem, ...]


def item_folder(out: Path, ref: Ref) -> Path:
    """OUT/<bucket>/<key with anything but letters, digits, '.', '-', '_' and '/' replaced>."""
    safe = re.sub(r"[^A-Za-z0-9._/-]", "_", f"{ref.bucket}/{ref.key}").replace("..", "_")
    return out / safe
