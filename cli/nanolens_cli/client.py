"""A small synchronous client of the gateway: upload, analyse, download, list models."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_runtime.server import channel_options
from nanolens_runtime.tls import channel_credentials

CHUNK = 1 << 20


class Progress:
    """One self-rewriting line on stderr for anything slow (silent when stderr is not a terminal)."""

    def __init__(self, label: str, total: int = 0, enabled: bool | None = None):
        self.label = label
        self.total = total
        self.done = 0
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def advance(self, n: int) -> None:
        self.done += n
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        elapsed = time.monotonic() - self.start
        if self.total:
            pct = 100.0 * self.done / self.total
            sys.stderr.write(f"\r{self.label}: {self.done / 1e6:.1f}/{self.total / 1e6:.1f} MB ({pct:3.0f} %)")
        else:
            sys.stderr.write(f"\r{self.label}: {elapsed:5.1f} s")
        sys.stderr.flush()

    def __enter__(self) -> Progress:
        if self.enabled and not self.total:  # a ticking clock while we wait on the server
            def tick():
                while not self._stop.wait(0.25):
                    self._draw()

            self._thread = threading.Thread(target=tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        if self.enabled:
            sys.stderr.write(f"\r{self.label}: done in {time.monotonic() - self.start:.1f} s\n")


class GatewayClient:
    """``token``: the gateway's bearer token (default: the NANOLENS_TOKEN environment variable).
    A gateway serving TLS is reached with ``NANOLENS_GATEWAY_CA`` (the CA that signed its
    certificate) and, where it asks for one, the client certificate ``NANOLENS_CLIENT_CERT`` and
    key ``NANOLENS_CLIENT_KEY``."""

    def __init__(self, address: str, max_message_mb: int = 64, token: str | None = None):
        env = os.environ
        credentials = channel_credentials(env.get("NANOLENS_GATEWAY_CA", ""), env.get("NANOLENS_CLIENT_CERT", ""),
                                          env.get("NANOLENS_CLIENT_KEY", ""),
                                          ("NANOLENS_GATEWAY_CA", "NANOLENS_CLIENT_CERT", "NANOLENS_CLIENT_KEY"))
        options = channel_options(max_message_mb)
        self.channel = (grpc.insecure_channel(address, options=options) if credentials is None
                        else grpc.secure_channel(address, credentials, options=options))
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        token = os.environ.get("NANOLENS_TOKEN", "") if token is None else token
        self.metadata = [("authorization", f"Bearer {token}")] if token else None

    def close(self) -> None:
        self.channel.close()

    def upload(self, path: Path, key: str = "", progress: bool | None = None,
               timeout: float | None = None) -> gateway_pb2.UploadResponse:
        path = Path(path)
        bar = Progress(f"upload {path.name}", path.stat().st_size, progress)

        def requests() -> Iterator[gateway_pb2.UploadRequest]:
            yield gateway_pb2.UploadRequest(header=gateway_pb2.UploadHeader(key=key, filename=path.name))
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    bar.advance(len(chunk))
                    yield gateway_pb2.UploadRequest(chunk=chunk)

        with bar:
            return self.stub.Upload(requests(), timeout=timeout, metadata=self.metadata)

    def analyze(self, ref: common_pb2.ObjectRef, analysis: int, model: str = "", options: dict | None = None,
                force: bool = False, timeout: float | None = None,
                progress: bool | None = None) -> gateway_pb2.AnalyzeResponse:
        name, _, version = model.partition(":")
        request = gateway_pb2.AnalyzeRequest(input=ref, analysis=analysis, model_name=name, model_version=version,
                                             options=options or {}, force=force)
        with Progress("analyse", 0, progress):
            return self.stub.Analyze(request, timeout=timeout, metadata=self.metadata)

    def download(self, ref: common_pb2.ObjectRef, timeout: float | None = None) -> bytes:
        responses = self.stub.Download(gateway_pb2.DownloadRequest(object=ref), timeout=timeout, metadata=self.metadata)
        return b"".join(r.chunk for r in responses)

    def list_models(self, timeout: float | None = 30) -> gateway_pb2.ListModelsResponse:
        return self.stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=timeout, metadata=self.metadata)


def save_outputs(client: GatewayClient, response: gateway_pb2.AnalyzeResponse, out: Path) -> list[Path]:
    """result.json plus every artefact, downloaded through the gateway."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "result.json"]
    written[0].write_text(json.dumps(json.loads(response.result_json), indent=2))
    for artefact in response.artifacts:
        target = out / artefact.name
        target.write_bytes(client.download(artefact.ref))
        written.append(target)
    return written
