"""Traces across real processes: the gateway and the spectra service export their spans over OTLP
to a receiver in this test, the service's span is the child of the gateway's in one trace, and
the trace id is in the log lines written during the call. Without an endpoint nothing is exported."""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from nanolens.gateway.v1 import gateway_pb2
from nanolens_cli.stack import Stack
from nanolens_runtime import tracing
from wire import GatewayClient


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace endpoint that keeps what it receives: {span id: (service, name, trace id, parent)}."""

    def __init__(self):
        self.spans: dict[str, tuple[str, str, str, str]] = {}
        self.lock = threading.Lock()

    def Export(self, request, context):
        with self.lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        self.spans[span.span_id.hex()] = (attributes.get("service.name", ""), span.name,
                                                          span.trace_id.hex(), span.parent_span_id.hex())
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture(scope="module")
def receiver():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    collected = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collected, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collected, port
    server.stop(0)


def test_one_trace_runs_from_the_gateway_into_the_service(receiver, tmp_path):
    collected, port = receiver
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}", "OTEL_EXPORTER_OTLP_INSECURE": "true",
           "OTEL_BSP_SCHEDULE_DELAY": "200"}
    stack = Stack(extra_env=env, domains=("spectra",), log_dir=tmp_path / "logs")
    endpoints = stack.start()
    try:
        client = GatewayClient(endpoints.gateway)
        path = tmp_path / "spectrum.txt"
        path.write_text("".join(f"{100 + 3 * i} {1000 + (i % 9) * 15}\n" for i in range(960)))
        ref = client.upload(path, timeout=60).object
        client.analyze(ref, gateway_pb2.ANALYSIS_KIND_SPECTRA, timeout=120)
        client.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with collected.lock:
                spans = dict(collected.spans)
            analyze = [(sid, s) for sid, s in spans.items()
                       if s[:2] == ("gateway", "nanolens.gateway.v1.Gateway/Analyze")]
            children = [s for s in spans.values() if s[0] == "spectra" and analyze and s[3] == analyze[0][0]]
            if children:
                break
            time.sleep(0.2)
        assert analyze, f"no Analyze span from the gateway among {sorted(set(s[:2] for s in spans.values()))}"
        (analyze_id, (_, _, trace_id, _)), = analyze
        assert children and all(c[2] == trace_id for c in children), spans
        assert any("SpectraService" in c[1] for c in children)
        (gateway,) = [p for p in stack.processes if p.name == "gateway"]
        lines = [json.loads(line) for line in gateway.lines if line.startswith("{")]
        traced = {line["logger"] for line in lines if line.get("trace_id") == trace_id}
        assert {"nanolens.gateway", "nanolens.audit"} <= traced, traced  # its "analysed" and audit lines
    finally:
        stack.stop()


def test_without_an_endpoint_no_sdk_is_installed(monkeypatch):
    for variable in tracing.ENDPOINT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert tracing.configure("test", "0") is False
    assert tracing.trace_id() == ""
    assert tracing.outgoing_metadata([("a", "b")]) == [("a", "b")]  # the no-op propagator adds nothing
