"""The rendered NetworkPolicies admit exactly the flows the platform needs: callers outside the
release reach only the gateway's gRPC port, domain services take gRPC only from the gateway, the
in-chart MinIO only from the release's pods, metrics ports only from pods (Prometheus).

No cluster runs here, so the policies are evaluated as Kubernetes does (NetworkPolicy v1 ingress
semantics) on the rendered manifests."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from deploy_support import NAMESPACE, SCENARIOS


@dataclass(frozen=True)
class Source:
    """Where a connection comes from: a pod (labels, namespace and its namespace's labels) or,
    with ``pod=False``, an address outside the cluster."""

    name: str
    labels: dict = field(default_factory=dict)
    namespace: str = NAMESPACE
    namespace_labels: dict = field(default_factory=dict)
    pod: bool = True


OUTSIDE = Source("outside", pod=False)
STRANGER = Source("stranger", {"app": "something-else"})  # another application's pod, same namespace
PROMETHEUS = Source("prometheus", {"app.kubernetes.io/name": "prometheus"}, "monitoring",
                    {"kubernetes.io/metadata.name": "monitoring"})
INGRESS = Source("ingress", {"app.kubernetes.io/name": "ingress-nginx"}, "ingress-nginx",
                 {"kubernetes.io/metadata.name": "ingress-nginx"})


def selects(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_admits(peer: dict, source: Source, namespace: str) -> bool:
    if "ipBlock" in peer:
        return not source.pod and peer["ipBlock"]["cidr"] in ("0.0.0.0/0", "::/0")
    if not source.pod:
        return False
    if "namespaceSelector" in peer:
        ns_labels = {"kubernetes.io/metadata.name": source.namespace, **source.namespace_labels}
        if not selects(peer["namespaceSelector"], ns_labels):
            return False
    elif source.namespace != namespace:
        return False  # a podSelector alone means pods of the policy's own namespace
    return "podSelector" not in peer or selects(peer["podSelector"], source.labels)


def admitted(rendered, pod: dict, port_name: str, source: Source) -> bool:
    """Whether ``source`` may open a connection to ``pod`` (a rendered pod template) on the named port."""
    labels = pod["metadata"]["labels"]
    policies = [p for p in rendered.kind("NetworkPolicy")
                if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], labels)]
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress") or []:
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port_name for p in ports):
                continue
            peers = rule.get("from")
            if not peers or any(peer_admits(peer, source, NAMESPACE) for peer in peers):
                return True
    return False


def pods(rendered) -> dict[str, dict]:
    """component -> its pod template (Deployments, StatefulSets, Jobs)."""
    out = {}
    for workload, _ in rendered.pod_specs():
        template = workload["spec"]["template"]
        out[template["metadata"]["labels"]["app.kubernetes.io/component"]] = template
    return out


def as_source(name: str, template: dict) -> Source:
    return Source(name, template["metadata"]["labels"])


@pytest.mark.parametrize("scenario", ["default", "tem-enabled", "everything", "gpu-spectra"])
def test_only_the_gateway_is_reachable_from_outside_the_release(render, scenario):
    rendered = render(SCENARIOS[scenario])
    found = pods(rendered)
    domains = [n for n, t in found.items() if t["metadata"]["labels"].get("nanolens.io/role") == "domain"]
    assert domains and "gateway" in found
    gateway = as_source("gateway", found["gateway"])
    for outsider in (OUTSIDE, STRANGER, INGRESS):
        assert admitted(rendered, found["gateway"], "grpc", outsider), outsider.name
        for name in domains:
            assert not admitted(rendered, found[name], "grpc", outsider), (outsider.name, name)
        if "minio" in found:
            assert not admitted(rendered, found["minio"], "s3", outsider), outsider.name
    for name in domains:
        assert admitted(rendered, found[name], "grpc", gateway), name
        for other in domains:  # a domain service does not call another
            assert not admitted(rendered, found[name], "grpc", as_source(other, found[other])), (other, name)


def test_minio_takes_the_release_pods_only(render):
    rendered = render({})
    found = pods(rendered)
    assert "minio" in found and "minio-buckets" in found
    for name, template in found.items():
        if name != "minio":
            assert admitted(rendered, found["minio"], "s3", as_source(name, template)), name
    assert not admitted(rendered, found["minio"], "s3", STRANGER)
    assert "minio" not in pods(render(SCENARIOS["external-minio"]))


def test_metrics_ports_are_scraped_from_pods_only(render):
    rendered = render({})
    for name, template in pods(rendered).items():
        if name.startswith("minio"):
            continue
        assert admitted(rendered, template, "metrics", PROMETHEUS), name
        assert not admitted(rendered, template, "metrics", OUTSIDE), name


def test_the_gateway_can_be_limited_to_the_ingress_controller(render):
    only_ingress = [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    rendered = render({"networkPolicy": {"gatewayFrom": only_ingress}})
    gateway = pods(rendered)["gateway"]
    assert admitted(rendered, gateway, "grpc", INGRESS)
    assert not admitted(rendered, gateway, "grpc", OUTSIDE)
    assert not admitted(rendered, gateway, "grpc", STRANGER)


def test_presigned_upload_clients_can_be_let_into_minio(render):
    rendered = render({"networkPolicy": {"minioFrom": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}})
    assert admitted(rendered, pods(rendered)["minio"], "s3", OUTSIDE)


def test_every_component_has_a_policy_and_switching_them_off_removes_them(render):
    rendered = render(SCENARIOS["everything"])
    policies = rendered.kind("NetworkPolicy")
    for name, template in pods(rendered).items():
        if name == "minio-buckets":
            continue  # a Job: it calls, nothing calls it
        assert any(selects(p["spec"]["podSelector"], template["metadata"]["labels"]) for p in policies), name
    assert not render({"networkPolicy": {"enabled": False}}).kind("NetworkPolicy")


def test_the_evaluator_itself_denies_and_admits():
    """The evaluator above is what the other tests trust: check it on hand-written policies."""
    class Fake:
        def __init__(self, docs):
            self.docs = docs

        def kind(self, kind):
            return [d for d in self.docs if d["kind"] == kind]

    pod = {"metadata": {"labels": {"app": "x"}}}
    assert admitted(Fake([]), pod, "grpc", OUTSIDE)  # no policy: open
    deny_all = {"kind": "NetworkPolicy", "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert not admitted(Fake([deny_all]), pod, "grpc", STRANGER)
    from_ns = {"kind": "NetworkPolicy", "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [
        {"ports": [{"port": "grpc"}], "from": [{"namespaceSelector": {}}]}]}}
    assert admitted(Fake([from_ns]), pod, "grpc", PROMETHEUS)
    assert not admitted(Fake([from_ns]), pod, "grpc", OUTSIDE)
    assert not admitted(Fake([from_ns]), pod, "metrics", PROMETHEUS)
