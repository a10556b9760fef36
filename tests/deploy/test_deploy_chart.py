"""The Helm chart (deploy/helm/nanolens): lint, render under several value combinations, validate
every manifest against the Kubernetes API schemas, and check the properties operations rely on."""

from __future__ import annotations

import re

import pytest
import yaml
from deploy_support import NAMESPACE, RULES, SCENARIOS, strip_private

helm = pytest.importorskip("helm_python")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

# Validate against the chart's minimum Kubernetes (Chart.yaml kubeVersion) and a recent release.
KUBE_VERSIONS = ["1.31.0", "1.35.0"]
FULLNAME = "nanolens"  # release "nanolens" -> resource prefix "nanolens"
MONITORING_GROUP = "monitoring.coreos.com/v1"
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")

scenario_ids = list(SCENARIOS)


@pytest.fixture(params=scenario_ids)
def scenario(request):
    return request.param, SCENARIOS[request.param]


def containers(pod_spec: dict) -> list[dict]:
    return pod_spec.get("initContainers", []) + pod_spec["containers"]


def env_of(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


# --- lint ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", scenario_ids)
def test_helm_lint_is_clean(name):
    from deploy_support import CHART

    report = helm.lint(CHART, SCENARIOS[name], strict=True, namespace=NAMESPACE, kube_version="v1.35.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # 2 warning, 3 error
    assert not problems and not report["errors"], problems or report["errors"]


# --- every manifest is valid Kubernetes ---------------------------------------------------------


def test_every_manifest_validates_against_kubernetes_schemas(scenario, render):
    name, values = scenario
    rendered = render(values)
    assert rendered.docs, "nothing rendered"
    checked = 0
    for doc in rendered.docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: no upstream schema; test_monitoring_custom_resources checks them
        for version in KUBE_VERSIONS:
            try:
                kubernetes_validate.validate(strip_private(doc), version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"[{name}] {doc['kind']}/{doc['metadata']['name']} invalid for "
                    f"Kubernetes {version} at {path}: {exc.message}"
                )
        checked += 1
    assert checked >= 8


def test_monitoring_custom_resources_are_well_formed(render):
    rendered = render({})
    (monitor,) = rendered.kind("ServiceMonitor")
    (rule,) = rendered.kind("PrometheusRule")
    for doc in (monitor, rule):
        assert doc["apiVersion"] == MONITORING_GROUP
        assert doc["metadata"]["namespace"] == NAMESPACE
        assert set(strip_private(doc)) == {"apiVersion", "kind", "metadata", "spec"}

    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
        assert DURATION.match(endpoint["interval"]) and DURATION.match(endpoint["scrapeTimeout"])
        for relabel in endpoint.get("relabelings", []):
            assert relabel.get("action", "replace") in {
                "replace",
                "keep",
                "drop",
                "labelmap",
                "labeldrop",
                "labelkeep",
                "hashmod",
                "lowercase",
                "uppercase",
            }
            assert "targetLabel" in relabel
    # Every series gets job="nanolens" and service=<component>: the rules and dashboards use both.
    relabels = {r["targetLabel"]: r for r in spec["endpoints"][0]["relabelings"]}
    assert relabels["job"]["replacement"] == "nanolens"
    assert relabels["service"]["sourceLabels"] == ["__meta_kubernetes_service_label_app_kubernetes_io_component"]

    for group in rule["spec"]["groups"]:
        assert isinstance(group["name"], str) and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r)
            assert isinstance(r["expr"], str) and r["expr"].strip()
            assert "for" not in r or DURATION.match(r["for"])
            assert all(isinstance(v, str) for v in r.get("labels", {}).values())
            assert all(isinstance(v, str) for v in r.get("annotations", {}).values())


def test_prometheus_rule_embeds_the_promtool_tested_rules_file(render):
    (rule,) = render({}).kind("PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]


def test_service_monitor_selects_each_main_service_by_its_metrics_port(render, enabled_services):
    rendered = render({})
    (monitor,) = rendered.kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    selected = {
        s["metadata"]["name"] for s in rendered.kind("Service") if selector.items() <= s["metadata"]["labels"].items()
    }
    assert selected == {f"{FULLNAME}-{n}" for n in enabled_services({})}
    for name in selected:
        ports = {p["name"] for p in rendered.get("Service", name)["spec"]["ports"]}
        assert "metrics" in ports


# --- the per-service objects --------------------------------------------------------------------


def test_each_enabled_service_gets_deployment_service_hpa_pdb(scenario, render, enabled_services):
    name, values = scenario
    rendered = render(values)
    enabled = enabled_services(values)
    assert {"gateway", "spectra"} <= set(enabled) or name == "everything"
    expected = {f"{FULLNAME}-{svc}" for svc in enabled}
    assert rendered.names("Deployment") == expected
    assert {f"{FULLNAME}-{s}" for s in enabled} <= rendered.names("Service")
    hpa = {f"{FULLNAME}-{s}" for s, v in enabled.items() if v["autoscaling"]["enabled"]}
    pdb = {f"{FULLNAME}-{s}" for s, v in enabled.items() if v["pdb"]["enabled"]}
    assert rendered.names("HorizontalPodAutoscaler") == hpa
    assert rendered.names("PodDisruptionBudget") == pdb
    if name == "default":
        assert hpa == pdb == expected  # the defaults give every service all four


def test_default_install_runs_gateway_spectra_and_tem(render):
    rendered = render({})
    assert rendered.names("Deployment") == {"nanolens-gateway", "nanolens-spectra", "nanolens-tem"}
    for deployment in rendered.kind("Deployment"):
        component = deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        # The image's ENTRYPOINT is `python -m`: the module is the only argument.
        assert "command" not in container
        assert container["args"] == [f"nanolens_{component}"]
        assert container["image"] == "ghcr.io/nanolens/nanolens:0.1.0"  # one image for every service


def test_every_service_runs_its_module_in_the_shared_image(scenario, render, enabled_services):
    _, values = scenario
    rendered = render(values)
    for name, svc in enabled_services(values).items():
        (container,) = rendered.get("Deployment", f"nanolens-{name}")["spec"]["template"]["spec"]["containers"]
        assert "command" not in container, "the image's ENTRYPOINT (python -m) must stay in force"
        assert container["args"] == [svc["module"] or f"nanolens_{name}"]
        repository = "nanolens-gpu" if svc["gpu"]["enabled"] else "nanolens"
        assert container["image"] == f"ghcr.io/nanolens/{repository}:0.1.0"


def test_module_override_is_the_argument(render):
    rendered = render({"services": {"spectra": {"module": "nanolens_spectra.experimental"}}})
    (container,) = rendered.get("Deployment", "nanolens-spectra")["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["nanolens_spectra.experimental"]


def test_services_expose_named_grpc_and_metrics_ports(scenario, render, enabled_services):
    _, values = scenario
    rendered = render(values)
    for svc in enabled_services(values):
        service = rendered.get("Service", f"{FULLNAME}-{svc}")
        ports = {p["name"]: p for p in service["spec"]["ports"]}
        assert ports["grpc"]["port"] == 50051 and ports["grpc"]["targetPort"] == "grpc"
        assert ports["metrics"]["port"] == 9100 and ports["metrics"]["targetPort"] == "metrics"
        deployment = rendered.get("Deployment", f"{FULLNAME}-{svc}")
        assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        headless = rendered.get("Service", f"{FULLNAME}-{svc}-headless")
        assert headless["spec"]["clusterIP"] == "None"


def test_probes_are_grpc_probes_on_the_grpc_port(scenario, render):
    """gRPC health probes on the gRPC port, or on the plaintext probe port when the gRPC port speaks TLS."""
    _, values = scenario
    for deployment in render(values).kind("Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert int(env_of(container)["NANOLENS_GRPC_PORT"]["value"]) == ports["grpc"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            spec = container[probe]
            assert set(spec) & {"grpc", "httpGet", "exec", "tcpSocket"} == {"grpc"}, probe
            assert spec["grpc"]["port"] == ports.get("probe", ports["grpc"])
        startup = container["startupProbe"]
        # Model loading and warm-up get at least a minute before liveness takes over.
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 60


def test_termination_grace_exceeds_the_drain_grace(scenario, render):
    _, values = scenario
    for deployment in render(values).kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = env_of(container)
        drain = float(env["NANOLENS_DRAIN_DELAY_SECONDS"]["value"]) + float(env["NANOLENS_GRACE_SECONDS"]["value"])
        # The kubelet must not SIGKILL before the delay and the grace period have both run out.
        assert pod["terminationGracePeriodSeconds"] > drain
        # A draining pod answers NOT_SERVING: liveness must not kill it before the drain ends.
        live = container["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] > drain


def test_drain_grace_follows_config(render):
    rendered = render({"config": {"graceSeconds": 45}, "services": {"spectra": {"config": {
        "graceSeconds": 40, "drainDelaySeconds": 8}}}})
    pods = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in rendered.kind("Deployment")}
    assert pods["nanolens-gateway"]["terminationGracePeriodSeconds"] == 2 + 45 + 10
    assert pods["nanolens-spectra"]["terminationGracePeriodSeconds"] == 8 + 40 + 10
    env = env_of(pods["nanolens-spectra"]["containers"][0])
    assert env["NANOLENS_GRACE_SECONDS"]["value"] == "40" and env["NANOLENS_DRAIN_DELAY_SECONDS"]["value"] == "8"


def test_pods_are_hardened(scenario, render):
    _, values = scenario
    rendered = render(values)
    assert rendered.pod_specs()
    for workload, pod in rendered.pod_specs():
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        for container in containers(pod):
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in sc["capabilities"], where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "/tmp" in mounts, f"{where}: no writable /tmp"
            volume = next(v for v in pod["volumes"] if v["name"] == mounts["/tmp"])
            assert "emptyDir" in volume
            assert container["resources"].get("limits", {}).get("memory"), f"{where}: no memory limit"


def test_credentials_only_come_from_secrets(scenario, render):
    _, values = scenario
    rendered = render(values)
    secret_like = re.compile(r"(SECRET|PASSWORD|ACCESS_KEY|TOKEN|CREDENTIAL)", re.I)
    for workload, pod in rendered.pod_specs():
        for container in containers(pod):
            for env in container.get("env", []):
                if secret_like.search(env["name"]):
                    assert "value" not in env, f"{workload['metadata']['name']}: {env['name']} in plain env"
                    assert "secretKeyRef" in env["valueFrom"], env
    # Nothing in a ConfigMap or an annotation looks like a credential either.
    for doc in rendered.kind("ConfigMap"):
        assert not secret_like.search(" ".join(doc.get("data", {}))), doc["metadata"]["name"]


def test_s3_settings_in_chart_minio(render):
    rendered = render({})
    assert rendered.names("StatefulSet") == {"nanolens-minio"}
    assert "nanolens-minio" in rendered.names("Service")
    (job,) = rendered.kind("Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    job_env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert set(job_env["BUCKETS"]["value"].split()) == {"models", "raw", "results"}
    (secret,) = rendered.kind("Secret")
    assert secret["metadata"]["name"] == "nanolens-minio"
    assert set(secret["data"]) == {"root-user", "root-password"}
    for deployment in rendered.kind("Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["NANOLENS_S3_ENDPOINT"]["value"] == "nanolens-minio:9000"
        assert env["NANOLENS_S3_SECURE"]["value"] == "false"
        for key, secret_key in (("NANOLENS_S3_ACCESS_KEY", "root-user"), ("NANOLENS_S3_SECRET_KEY", "root-password")):
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "nanolens-minio", "key": secret_key}


def test_s3_settings_external(render):
    rendered = render(SCENARIOS["external-minio"])
    assert not rendered.kind("StatefulSet") and not rendered.kind("Job") and not rendered.kind("Secret")
    assert "nanolens-minio" not in rendered.names("Service")
    for deployment in rendered.kind("Deployment"):
        env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["NANOLENS_S3_ENDPOINT"]["value"] == "minio.storage.svc:9000"
        assert env["NANOLENS_S3_SECURE"]["value"] == "true"
        assert env["NANOLENS_S3_REGION"]["value"] == "eu-west-1"
        assert env["NANOLENS_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "facility-s3",
            "key": "access-key",
        }
        assert env["NANOLENS_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "facility-s3",
            "key": "secret-key",
        }


def test_gateway_is_wired_to_every_enabled_domain_service(scenario, render, enabled_services):
    _, values = scenario
    rendered = render(values)
    enabled = enabled_services(values)
    gateway = rendered.get("Deployment", "nanolens-gateway")
    env = env_of(gateway["spec"]["template"]["spec"]["containers"][0])
    addrs = {k: v["value"] for k, v in env.items() if re.fullmatch(r"NANOLENS_[A-Z0-9]+_ADDR", k)}
    domain = {n for n, v in enabled.items() if v["role"] == "domain"}
    assert addrs == {f"NANOLENS_{n.upper()}_ADDR": f"dns:///nanolens-{n}-headless:50051" for n in domain}
    for addr in addrs.values():
        host, port = addr.removeprefix("dns:///").split(":")
        service = rendered.get("Service", host)
        assert service and int(port) in {p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"}
    for key in ("NANOLENS_RAW_BUCKET", "NANOLENS_RESULTS_BUCKET", "NANOLENS_MAX_OBJECT_MB"):
        assert key in env
    assert "NANOLENS_SPECTRA_ADDR" in addrs


def test_process_settings_are_passed_as_env(render):
    rendered = render(
        {
            "config": {"logLevel": "DEBUG", "maxBatchSize": 32, "modelDir": "/models"},
            "services": {"spectra": {"config": {"maxBatchDelayMs": 9}, "env": {"NANOLENS_EXTRA": 1}}},
        }
    )
    env = env_of(rendered.get("Deployment", "nanolens-spectra")["spec"]["template"]["spec"]["containers"][0])
    values = {k: v.get("value") for k, v in env.items()}
    assert values["NANOLENS_LOG_LEVEL"] == "DEBUG"
    assert values["NANOLENS_LOG_FORMAT"] == "json"
    assert values["NANOLENS_MAX_BATCH_SIZE"] == "32"
    assert values["NANOLENS_MAX_BATCH_DELAY_MS"] == "9"
    assert values["NANOLENS_MODEL_DIR"] == "/models"
    assert values["NANOLENS_METRICS_PORT"] == "9100"
    assert values["NANOLENS_MAX_MESSAGE_MB"] == "64"
    assert values["NANOLENS_MODELS_BUCKET"] == "models"
    assert values["NANOLENS_ORT_PROVIDERS"] == "auto"
    assert values["NANOLENS_EXTRA"] == "1"
    # Threads follow the CPU limit (2 cores), not the node's core count.
    assert values["NANOLENS_INFERENCE_THREADS"] == "2"
    gateway = env_of(rendered.get("Deployment", "nanolens-gateway")["spec"]["template"]["spec"]["containers"][0])
    assert "NANOLENS_EXTRA" not in gateway and gateway["NANOLENS_MAX_BATCH_DELAY_MS"]["value"] == "5"


def test_inference_threads_from_millicores_and_explicit(render):
    rendered = render(
        {
            "services": {
                "spectra": {"resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}},
                "gateway": {"config": {"inferenceThreads": 3}},
            }
        }
    )
    spectra = env_of(rendered.get("Deployment", "nanolens-spectra")["spec"]["template"]["spec"]["containers"][0])
    gateway = env_of(rendered.get("Deployment", "nanolens-gateway")["spec"]["template"]["spec"]["containers"][0])
    assert spectra["NANOLENS_INFERENCE_THREADS"]["value"] == "2"
    assert gateway["NANOLENS_INFERENCE_THREADS"]["value"] == "3"


# --- GPUs ---------------------------------------------------------------------------------------


def gpu_parts(deployment: dict) -> dict:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return {
        "limit": container["resources"].get("limits", {}).get("nvidia.com/gpu"),
        "request": container["resources"].get("requests", {}).get("nvidia.com/gpu"),
        "selector": pod.get("nodeSelector", {}).get("nvidia.com/gpu.present"),
        "toleration": any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])),
        "image": container["image"],
        "providers": env_of(container)["NANOLENS_ORT_PROVIDERS"]["value"],
    }


def test_gpu_resources_only_where_a_service_asks(scenario, render, enabled_services):
    _, values = scenario
    rendered = render(values)
    for name, svc in enabled_services(values).items():
        parts = gpu_parts(rendered.get("Deployment", f"nanolens-{name}"))
        if svc["gpu"]["enabled"]:
            count = svc["gpu"]["count"]
            assert parts["limit"] == parts["request"] == count
            assert parts["selector"] == "true" and parts["toleration"]
            assert parts["image"] == "ghcr.io/nanolens/nanolens-gpu:0.1.0" and parts["providers"] == "cuda"
        else:
            assert parts["limit"] is None and parts["request"] is None
            assert parts["selector"] is None and not parts["toleration"]
            assert parts["image"] == "ghcr.io/nanolens/nanolens:0.1.0" and parts["providers"] != "cuda"


def test_no_gpu_anywhere_by_default(render):
    text = "\n".join(render({}).files.values())
    assert "nvidia.com/gpu" not in text and "-gpu" not in text


def test_gpu_service_keeps_its_own_scheduling_constraints(render):
    rendered = render(
        {
            "services": {
                "spectra": {
                    "gpu": {"enabled": True},
                    "nodeSelector": {"pool": "inference"},
                    "tolerations": [
                        {"key": "dedicated", "operator": "Equal", "value": "nanolens", "effect": "NoSchedule"}
                    ],
                }
            }
        }
    )
    pod = rendered.get("Deployment", "nanolens-spectra")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"pool": "inference", "nvidia.com/gpu.present": "true"}
    assert {t["key"] for t in pod["tolerations"]} == {"dedicated", "nvidia.com/gpu"}


# --- autoscaling and disruption -----------------------------------------------------------------


def test_hpa_scales_the_deployment_on_cpu_by_default(render):
    for hpa in render({}).kind("HorizontalPodAutoscaler"):
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": hpa["metadata"]["name"],
        }
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        (metric,) = spec["metrics"]
        assert metric["type"] == "Resource" and metric["resource"]["name"] == "cpu"
        assert spec["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_hpa_can_scale_on_queue_wait(render):
    rendered = render(SCENARIOS["everything"])
    metrics = rendered.get("HorizontalPodAutoscaler", "nanolens-tem")["spec"]["metrics"]
    assert metrics == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "nanolens_batch_queue_wait_seconds_p95"},
                "target": {"type": "AverageValue", "averageValue": "100m"},
            },
        }
    ]


def test_replicas_owned_by_hpa_or_values(render):
    rendered = render(SCENARIOS["everything"])
    spectra = rendered.get("Deployment", "nanolens-spectra")
    assert spectra["spec"]["replicas"] == 3
    assert "replicas" not in rendered.get("Deployment", "nanolens-gateway")["spec"]  # HPA owns it
    pdb = rendered.get("PodDisruptionBudget", "nanolens-spectra")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb


def test_pdb_never_blocks_drains_by_default(render):
    for pdb in render({}).kind("PodDisruptionBudget"):
        assert pdb["spec"]["maxUnavailable"] == 1 and "minAvailable" not in pdb["spec"]
        assert pdb["spec"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
        name = pdb["metadata"]["name"]
        deployment = render({}).get("Deployment", name)
        assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]


# --- monitoring toggles -------------------------------------------------------------------------


def test_monitoring_on_by_default(render):
    rendered = render({})
    assert len(rendered.kind("ServiceMonitor")) == len(rendered.kind("PrometheusRule")) == 1
    dashboards = [c for c in rendered.kind("ConfigMap") if c["metadata"]["labels"].get("grafana_dashboard") == "1"]
    assert dashboards
    from deploy_support import DASHBOARDS

    shipped = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    data = {k: v for c in dashboards for k, v in c["data"].items()}
    assert data.keys() == shipped.keys()
    for key, text in data.items():
        assert yaml.safe_load(text) == yaml.safe_load(shipped[key])
    assert all(c["metadata"]["annotations"]["grafana_folder"] == "NanoLens" for c in dashboards)


def test_monitoring_off_renders_no_monitoring_objects(render):
    rendered = render(SCENARIOS["monitoring-off"])
    assert not rendered.kind("ServiceMonitor") and not rendered.kind("PrometheusRule")
    assert not [c for c in rendered.kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert not [d for d in rendered.docs if d["apiVersion"].startswith("monitoring.coreos.com")]


def test_monitoring_parts_toggle_separately(render):
    rendered = render(
        {
            "monitoring": {
                "prometheusRule": {"enabled": False},
                "serviceMonitor": {"labels": {"release": "kube-prometheus-stack"}},
                "dashboards": {"namespace": "grafana"},
            }
        }
    )
    assert not rendered.kind("PrometheusRule")
    (monitor,) = rendered.kind("ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (dashboard,) = [c for c in rendered.kind("ConfigMap") if "grafana_dashboard" in c["metadata"]["labels"]]
    assert dashboard["metadata"]["namespace"] == "grafana"


# --- adding a service is values only ------------------------------------------------------------


def test_a_new_service_needs_values_only(render):
    rendered = render({"services": {"xrd": {"enabled": True, "gpu": {"enabled": True}}}})
    deployment = rendered.get("Deployment", "nanolens-xrd")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert "command" not in container and container["args"] == ["nanolens_xrd"]
    assert container["image"] == "ghcr.io/nanolens/nanolens-gpu:0.1.0"  # the shared GPU image
    for kind in ("Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"):
        assert rendered.get(kind, "nanolens-xrd"), kind
    gateway = env_of(rendered.get("Deployment", "nanolens-gateway")["spec"]["template"]["spec"]["containers"][0])
    assert gateway["NANOLENS_XRD_ADDR"]["value"] == "dns:///nanolens-xrd-headless:50051"
    assert "nanolens-xrd" in rendered.notes


def images_of(rendered) -> dict[str, str]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["image"]
        for d in rendered.kind("Deployment")
    }


def test_image_overrides(render):
    rendered = render(
        {
            "image": {"registry": "registry.facility.org/ai", "repository": "nl", "tag": "1.2.3"},
            "services": {"spectra": {"image": {"repository": "spectra", "tag": "1.2.4"}}},
        }
    )
    assert images_of(rendered) == {
        "nanolens-gateway": "registry.facility.org/ai/nl:1.2.3",
        "nanolens-spectra": "registry.facility.org/ai/spectra:1.2.4",
        "nanolens-tem": "registry.facility.org/ai/nl:1.2.3",
    }


def test_gpu_image_overrides(render):
    # Both flavours in one repository, told apart by a tag suffix; no registry prefix.
    one_repo = {"registry": "", "gpu": {"repository": "nanolens", "tagSuffix": "-gpu"}}
    rendered = render({"image": one_repo, "services": {"spectra": {"gpu": {"enabled": True}}}})
    assert images_of(rendered) == {"nanolens-gateway": "nanolens:0.1.0", "nanolens-spectra": "nanolens:0.1.0-gpu",
                                   "nanolens-tem": "nanolens:0.1.0"}
    # A per-service repository/tag wins for either flavour; a GPU service keeps the suffix.
    rendered = render(
        {
            "image": {"gpu": {"tagSuffix": "-cuda13"}},
            "services": {
                "spectra": {"gpu": {"enabled": True}, "image": {"repository": "spectra-gpu", "tag": "0.2.0"}},
                "tem": {"enabled": True, "gpu": {"enabled": True}},
            },
        }
    )
    assert images_of(rendered) == {
        "nanolens-gateway": "ghcr.io/nanolens/nanolens:0.1.0",
        "nanolens-spectra": "ghcr.io/nanolens/spectra-gpu:0.2.0-cuda13",
        "nanolens-tem": "ghcr.io/nanolens/nanolens-gpu:0.1.0-cuda13",
    }


def test_names_follow_the_release(chart):
    from deploy_support import Rendered

    rendered = Rendered(chart.render({}, name="lab7", namespace="imaging"))
    assert rendered.names("Deployment") == {"lab7-nanolens-gateway", "lab7-nanolens-spectra", "lab7-nanolens-tem"}
    env = env_of(rendered.get("Deployment", "lab7-nanolens-gateway")["spec"]["template"]["spec"]["containers"][0])
    assert env["NANOLENS_SPECTRA_ADDR"]["value"] == "dns:///lab7-nanolens-spectra-headless:50051"
    assert env["NANOLENS_S3_ENDPOINT"]["value"] == "lab7-nanolens-minio:9000"
    assert all(d["metadata"]["namespace"] == "imaging" for d in rendered.docs)


def test_notes_render(render):
    notes = render({}).notes
    assert "nanolens-gateway.nanolens.svc:50051" in notes and "nanolens-spectra" in notes
    assert "port-forward" in notes


# --- values the chart refuses -------------------------------------------------------------------

BAD_VALUES = {
    "replicas below 1": ({"services": {"spectra": {"replicas": 0}}}, "minimum"),
    "unknown top-level key": ({"replicaCount": 2}, "additional properties"),
    "unknown service key": ({"services": {"spectra": {"replica": 2}}}, "additional properties"),
    "typo in monitoring": ({"monitoring": {"serviceMonitors": {"enabled": True}}}, "additional properties"),
    "bad service name": ({"services": {"Spectra_2": {"enabled": True}}}, "Spectra_2"),
    "unknown ORT provider": ({"config": {"ortProviders": "tpu"}}, "ortProviders"),
    "unknown log level": ({"config": {"logLevel": "LOUD"}}, "logLevel"),
    "gpu count 0": ({"services": {"spectra": {"gpu": {"enabled": True, "count": 0}}}}, "count"),
    "bad port": ({"ports": {"grpc": 70000}}, "grpc"),
    "secret key in plain env": (
        {"services": {"spectra": {"env": {"NANOLENS_S3_SECRET_KEY": "x"}}}},
        "NANOLENS_S3_SECRET_KEY",
    ),
    "gateway tokens in plain env": (
        {"services": {"gateway": {"env": {"NANOLENS_GATEWAY_TOKENS": "x"}}}},
        "NANOLENS_GATEWAY_TOKENS",
    ),
    "unknown auth key": ({"auth": {"secret": "x"}}, "secret"),
    "secret key in extraEnv": (
        {"services": {"spectra": {"extraEnv": [{"name": "NANOLENS_S3_ACCESS_KEY", "value": "x"}]}}},
        "extraEnv",
    ),
    "external storage without Secret": (
        {"objectStorage": {"mode": "external", "external": {"endpoint": "s3:9000"}}},
        "existingSecret",
    ),
    "external storage without endpoint": (
        {"objectStorage": {"mode": "external", "external": {"existingSecret": "s3"}}},
        "endpoint",
    ),
    "endpoint with scheme": (
        {"objectStorage": {"mode": "external", "external": {"endpoint": "https://s3:9000", "existingSecret": "s3"}}},
        "endpoint",
    ),
    "unknown storage mode": ({"objectStorage": {"mode": "nfs"}}, "mode"),
    "minio image latest": ({"minio": {"image": {"tag": "latest"}}}, "tag"),
    "image tag latest": ({"image": {"tag": "latest"}}, "tag"),
    "empty image repository": ({"image": {"repository": ""}}, "repository"),
    "empty gpu image repository": ({"image": {"gpu": {"repository": ""}}}, "repository"),
    "old image.gpuTagSuffix key": ({"image": {"gpuTagSuffix": "-gpu"}}, "gpuTagSuffix"),
    "writable root filesystem": (
        {"containerSecurityContext": {"readOnlyRootFilesystem": False}},
        "readOnlyRootFilesystem",
    ),
    "root allowed": ({"podSecurityContext": {"runAsNonRoot": False}}, "runAsNonRoot"),
    "bad CPU quantity": ({"services": {"spectra": {"resources": {"limits": {"cpu": "two"}}}}}, "cpu"),
    "min replicas above max": (
        {"services": {"spectra": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}}},
        "minReplicas (5) > maxReplicas (2)",
    ),
    "nothing to autoscale on": (
        {"services": {"spectra": {"autoscaling": {"targetCPUUtilizationPercentage": 0}}}},
        "no metric to scale on",
    ),
    "liveness shorter than drain": ({"config": {"graceSeconds": 90}}, "must exceed drainDelaySeconds"),
    "liveness shorter than delay + grace": ({"config": {"graceSeconds": 50, "drainDelaySeconds": 15}},
                                            "must exceed drainDelaySeconds"),
}


@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_bad_values_are_rejected(case, chart):
    values, fragment = BAD_VALUES[case]
    with pytest.raises(helm.HelmError) as info:
        chart.render(values, name="nanolens", namespace=NAMESPACE)
    assert fragment in str(info.value), str(info.value)


@pytest.mark.parametrize("name", scenario_ids)
def test_scenarios_pass_the_schema(name, chart):
    chart.validate_schema(SCENARIOS[name])


def test_gateway_tokens_come_from_a_secret_only(render):
    gateway = lambda rendered: env_of(  # noqa: E731
        rendered.get("Deployment", "nanolens-gateway")["spec"]["template"]["spec"]["containers"][0])
    assert "NANOLENS_GATEWAY_TOKENS" not in gateway(render({}))
    env = gateway(render({"auth": {"existingSecret": "lab-tokens"}}))
    assert env["NANOLENS_GATEWAY_TOKENS"]["valueFrom"]["secretKeyRef"] == {"name": "lab-tokens", "key": "tokens"}
    spectra = render({"auth": {"existingSecret": "lab-tokens"}}).get("Deployment", "nanolens-spectra")
    assert "NANOLENS_GATEWAY_TOKENS" not in env_of(spectra["spec"]["template"]["spec"]["containers"][0])
