"""The requests both clients send and the files they read and write, built once."""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from nanolens.gateway.v1 import gateway_pb2
from nanolens_client.errors import from_item_error
from nanolens_client.results import Item, ItemResult, Job, JobItem, Ref, Result, item_folder

CHUNK = 1 << 20
#: what a job writes beside its items' results (nanolens_gateway.automation), fetched by results()
REPORT_FILES = ("report.html", "index.csv", "index.parquet")


def analysis_kind(kind: str | int) -> int:
    """An analysis by its result name (``particle_sizes``), its enum name
    (``ANALYSIS_KIND_PARTICLE_SIZES``) or its number.

    Raises
    ------
    ValueError
        Naming the analyses there are.
    """
    values = {v for v in gateway_pb2.AnalysisKind.values() if v}
    if isinstance(kind, int) and kind in values:
        return kind
    if isinstance(kind, str):
        name = kind if kind.startswith("ANALYSIS_KIND_") else f"ANALYSIS_KIND_{kind.upper()}"
        if name in gateway_pb2.AnalysisKind.keys() and gateway_pb2.AnalysisKind.Value(name):
            return gateway_pb2.AnalysisKind.Value(name)
    names = sorted(analysis_names())
    raise ValueError(f"unknown analysis {kind!r}; one of {', '.join(names)}")


def analysis_names() -> list[str]:
    """The analyses the gateway's API declares, by their result names."""
    return [n.removeprefix("ANALYSIS_KIND_").lower() for n, v in gateway_pb2.AnalysisKind.items() if v]


def option_text(options: Mapping[str, Any]) -> dict[str, str]:
    """Options as the gateway takes them: True/False as true/false, numbers as text, None left out."""
    out = {}
    for key, value in options.items():
        if value is None:
            continue
        out[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    return out


def analyze_request(ref: Ref, kind: str | int, model: str, options: Mapping[str, Any],
                    force: bool) -> gateway_pb2.AnalyzeRequest:
    name, _, version = model.partition(":")
    return gateway_pb2.AnalyzeRequest(input=ref.proto(), analysis=analysis_kind(kind), model_name=name,
                                      model_version=version, options=option_text(options), force=force)


def many_request(item: Item) -> gateway_pb2.AnalyzeManyRequest:
    """One AnalyzeMany item: a Ref named, anything else read and sent inline.

    Raises
    ------
    ValueError, FileNotFoundError, TypeError
        As ``payload`` does, before anything is sent.
    """
    if isinstance(item.data, Ref):
        return gateway_pb2.AnalyzeManyRequest(
            id=item.id, request=analyze_request(item.data, item.kind, item.model, item.options, item.force))
    request = analyze_request(Ref("", ""), item.kind, item.model, item.options, item.force)
    request.ClearField("input")
    name, _, opener = payload(item.data, item.filename)
    with opener() as fh:
        data = fh.read()
    return gateway_pb2.AnalyzeManyRequest(id=item.id, request=request,
                                          inline=gateway_pb2.InlineItem(filename=name, data=data))


def item_result(answer: gateway_pb2.AnalyzeManyResponse) -> ItemResult:
    if answer.WhichOneof("outcome") == "result":
        return ItemResult(answer.id, result=Result.of(answer.result))
    error = answer.error
    return ItemResult(answer.id, error=from_item_error(error.code, error.message, error.field))


def submit_request(prefix: str, kind: str | int, keys: list[str], bucket: str, model: str,
                   options: Mapping[str, Any]) -> gateway_pb2.SubmitJobRequest:
    name, _, version = model.partition(":")
    request = gateway_pb2.SubmitJobRequest(analysis=analysis_kind(kind), options=option_text(options), bucket=bucket,
                                           prefix=prefix, model_name=name, model_version=version)
    for key in keys:
        request.objects.add(bucket=bucket, key=key)
    return request


def payload(data: str | Path | bytes | Any, filename: str | None) -> tuple[str, int, Any]:
    """(file name, size, opener) of what ``analyse``/``upload`` send: a path, bytes (with a
    ``filename`` whose extension tells the gateway the format), or a numpy array (sent as .npy).

    Raises
    ------
    ValueError, FileNotFoundError
        Bytes without a file name; a path that is not a file.
    """
    if isinstance(data, str | Path):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"{path} is not a file")
        return filename or path.name, path.stat().st_size, lambda: open(path, "rb")
    if isinstance(data, bytes | bytearray | memoryview):
        if not filename:
            raise ValueError("bytes need a filename: its extension tells the gateway the format (e.g. spectrum.csv)")
        raw = bytes(data)
        return filename, len(raw), lambda: io.BytesIO(raw)
    if type(data).__module__ == "numpy":  # an array: numpy is the caller's (the `arrays` extra)
        import numpy as np

        buffer = io.BytesIO()
        np.save(buffer, data, allow_pickle=False)
        return payload(buffer.getvalue(), filename or "array.npy")
    raise TypeError(f"cannot send a {type(data).__name__}: give a path, bytes or a numpy array")


def upload_messages(filename: str, key: str, opener, on_bytes=None) -> Iterator[gateway_pb2.UploadRequest]:
    """The Upload stream: the header, then the bytes in 1 MiB chunks (``on_bytes(n)`` after each)."""
    yield gateway_pb2.UploadRequest(header=gateway_pb2.UploadHeader(key=key, filename=filename))
    with opener() as fh:
        while chunk := fh.read(CHUNK):
            yield gateway_pb2.UploadRequest(chunk=chunk)
            if on_bytes is not None:
                on_bytes(len(chunk))


def folder_files(folder: str | Path, prefix: str) -> list[tuple[Path, str]]:
    """(file, key) of every file under ``folder`` (hidden ones left out), sorted; the key is
    ``prefix`` + '/' + the file's path relative to the folder.

    Raises
    ------
    ValueError
        When ``folder`` is not a folder, holds no file, or ``prefix`` is empty.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder")
    if not prefix.strip("/"):
        raise ValueError("prefix must not be empty: the files go under it in the raw-data bucket")
    base = prefix.strip("/")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise ValueError(f"{root} holds no file")
    return [(p, f"{base}/{PurePosixPath(*p.relative_to(root).parts)}") for p in files]


def job_request(job: Job | str, items: bool = True) -> gateway_pb2.GetJobRequest:
    return gateway_pb2.GetJobRequest(job_id=job_id(job), items=items)


def job_id(job: Job | str) -> str:
    return job.job_id if isinstance(job, Job) else job


def result_files(item: JobItem, document: bytes, out: Path) -> tuple[Path, list[tuple[Path, Ref]]]:
    """Write an item's result.json under ``out``; return it and (target, artefact) to fetch."""
    folder = item_folder(out, item.object)
    folder.mkdir(parents=True, exist_ok=True)
    doc = json.loads(document)
    fetch = [(folder / Path(a["name"]).name, Ref(a["bucket"], a["key"])) for a in doc.get("artifacts", [])]
    return write_file(folder / "result.json", json.dumps(doc, indent=2)), fetch


def report_ref(job: Job, results_bucket: str, name: str) -> Ref | None:
    bucket = results_bucket or next((i.result.bucket for i in job.items if i.result), "")
    return Ref(bucket, f"jobs/{job.job_id}/{name}") if bucket else None


def download_request(ref: Ref) -> gateway_pb2.DownloadRequest:
    return gateway_pb2.DownloadRequest(object=ref.proto())


def search_request(collection: str, query: Ref, k: int, region: tuple[int, int, int, int] | None = None,
                   where: Mapping[str, str] | None = None) -> gateway_pb2.SearchCollectionRequest:
    request = gateway_pb2.SearchCollectionRequest(collection=collection, query=query.proto(), k=k, where=where or {})
    if region is not None:
        x, y, width, height = region
        request.region.CopyFrom(gateway_pb2.Region(x=x, y=y, width=width, height=height))
    return request


def write_file(path: Path, data: bytes | str) -> Path:
    """Write through a temporary file, so that a file present is a file complete."""
    raw = data.encode() if isinstance(data, str) else data
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        tmp.write(raw)
    try:
        os.replace(tmp.name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp.name)
        raise
    return path
