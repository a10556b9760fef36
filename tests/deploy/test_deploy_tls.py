"""TLS in the chart: every server gets its certificate, domain services require the gateway's
client certificate, the gateway presents it, and kubelet's probes move to the plaintext
health-only port."""

from __future__ import annotations

import pytest
from deploy_support import SCENARIOS


def containers_by_component(rendered) -> dict[str, tuple[dict, dict]]:
    out = {}
    for workload, spec in rendered.pod_specs():
        component = workload["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
        if not component.startswith("minio"):
            out[component] = (spec, spec["containers"][0])
    return out


def env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def test_tls_on_wires_certificates_and_probes(render):
    values = SCENARIOS["tls"]
    rendered = render(values)
    found = containers_by_component(rendered)
    assert "gateway" in found and len(found) >= 2
    for name, (spec, container) in found.items():
        variables = env(container)
        assert variables["NANOLENS_TLS_CERT"] == "/etc/nanolens/tls/server/tls.crt"
        assert variables["NANOLENS_PROBE_PORT"] == "50052"
        secrets = {v["name"]: v["secret"]["secretName"] for v in spec["volumes"] if "secret" in v}
        assert secrets["tls-server"] == "nanolens-tls"
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == 50052, (name, probe)
        assert {"name": "probe", "containerPort": 50052, "protocol": "TCP"} in container["ports"]
        if name == "gateway":
            assert "NANOLENS_TLS_CLIENT_CA" not in variables  # its callers present tokens, not certificates
            assert variables["NANOLENS_UPSTREAM_CERT"] == "/etc/nanolens/tls/client/tls.crt"
            assert secrets["tls-client"] == "nanolens-gateway-client"
        else:
            assert variables["NANOLENS_TLS_CLIENT_CA"] == "/etc/nanolens/tls/server/ca.crt"
            assert "tls-client" not in secrets and "NANOLENS_UPSTREAM_CA" not in variables


def test_tls_off_keeps_plaintext_and_the_grpc_port_for_probes(render):
    for name, (_, container) in containers_by_component(render({})).items():
        assert not any(k.startswith(("NANOLENS_TLS_", "NANOLENS_UPSTREAM_")) for k in env(container)), name
        assert container["readinessProbe"]["grpc"]["port"] == 50051


def test_tls_without_its_secrets_fails_the_render(chart):
    with pytest.raises(Exception, match="tls.enabled needs tls.serverSecret"):
        chart.render({"tls": {"enabled": True}}, name="nanolens", namespace="nanolens", is_install=True)
