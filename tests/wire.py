"""The gateway as tests of its wire behaviour see it: the generated stub with a token, requests and
responses as protobuf messages, failures as ``grpc.RpcError`` with the status code and details the
gateway sent. Users' code (and the CLI) goes through ``nanolens_client`` instead."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_client import ClientSettings

CHUNK = 1 << 20


class GatewayClient:
    """``token``: the bearer token (default NANOLENS_TOKEN); TLS from NANOLENS_GATEWAY_CA and the
    client certificate settings, as nanolens_client reads them."""

    def __init__(self, address: str, max_message_mb: int = 64, token: str | None = None):
        settings = ClientSettings.from_env(gateway=address, token=token, max_message_mb=max_message_mb)
        credentials = settings.credentials()
        options = settings.channel_options()
        self.channel = (grpc.insecure_channel(address, options=options) if credentials is None
                        else grpc.secure_channel(address, credentials, options=options))
        self.stub = gateway_pb2_grpc.GatewayStub(self.channel)
        self.metadata = settings.metadata() or None

    def close(self) -> None:
        self.channel.close()

    def upload(self, path: Path, key: str = "", timeout: float | None = None) -> gateway_pb2.UploadResponse:
        path = Path(path)

        def requests() -> Iterator[gateway_pb2.UploadRequest]:
            yield gateway_pb2.UploadRequest(header=gateway_pb2.UploadHeader(key=key, filename=path.name))
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK):
                    yield gateway_pb2.UploadRequest(chunk=chunk)

        return self.stub.Upload(requests(), timeout=timeout, metadata=self.metadata)

    def analyze(self, ref: common_pb2.ObjectRef, analysis: int, model: str = "", options: dict | None = None,
                force: bool = False, timeout: float | None = None) -> gateway_pb2.AnalyzeResponse:
        name, _, version = model.partition(":")
        request = gateway_pb2.AnalyzeRequest(input=ref, analysis=analysis, model_name=name, model_version=version,
                                             options=options or {}, force=force)
        return self.stub.Analyze(request, timeout=timeout, metadata=self.metadata)

    def download(self, ref: common_pb2.ObjectRef, timeout: float | None = None) -> bytes:
        responses = self.stub.Download(gateway_pb2.DownloadRequest(object=ref), timeout=timeout, metadata=self.metadata)
        return b"".join(r.chunk for r in responses)

    def list_models(self, timeout: float | None = 30) -> gateway_pb2.ListModelsResponse:
        return self.stub.ListModels(gateway_pb2.ListModelsRequest(), timeout=timeout, metadata=self.metadata)
