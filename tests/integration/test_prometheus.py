"""The dashboards and alerts work on real metrics: a real Prometheus (Debian's package, unpacked by
`make tools`) scrapes the local stack while it analyses the demo's samples, and every dashboard
query, alert rule and the metric names they read are then checked through Prometheus' HTTP API.
A renamed metric or label, or a panel that reads nothing, fails here."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import grpc
import pytest
import yaml

from nanolens.common.v1 import common_pb2
from nanolens.gateway.v1 import gateway_pb2
from nanolens_cli.demo import write_samples
from nanolens_cli.stack import Stack, free_port, wait_for_port
from nanolens_gateway.domains import analyses
from support import promql_metric_names
from wire import GatewayClient

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "nanolens"
RULES = CHART / "files" / "prometheus" / "nanolens.rules.yaml"
NAMESPACE = "nanolens-test"
RATE_WINDOW = "2m"  # what $__rate_interval stands for here: the whole test fits in it

pytestmark = pytest.mark.slow


def find_prometheus() -> str | None:
    for candidate in (shutil.which("prometheus"), REPO / ".tools" / "bin" / "prometheus"):
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def dashboard_queries() -> list[tuple[str, str, str]]:
    """(dashboard, panel title, PromQL with Grafana's variables filled in) of every panel target."""
    queries = []
    for path in sorted((CHART / "dashboards").glob("*.json")):
        board = json.loads(path.read_text())
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                expr = (target["expr"].replace("$__rate_interval", RATE_WINDOW)
                        .replace("$namespace", NAMESPACE).replace("$service", ".*"))
                queries.append((path.stem, panel["title"], expr))
    return queries


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params) -> dict:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        with urllib.request.urlopen(f"{self.url}{path}{query}", timeout=10) as response:
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.get("/api/v1/query", query=expr)["result"]

    def alerts(self) -> dict[str, dict]:
        groups = self.get("/api/v1/rules", type="alert")["groups"]
        return {rule["name"]: rule for group in groups for rule in group["rules"]}


@pytest.fixture(scope="module")
def scraped(tmp_path_factory):
    """A stack analysing every demo sample (plus refused and failing calls), scraped each second by
    a real Prometheus that also evaluates the chart's alert rules; yields once the load is in."""
    binary = find_prometheus()
    if binary is None:
        pytest.skip("prometheus not found on PATH or in .tools/bin: run `make tools` (Debian package `prometheus`)")
    work = tmp_path_factory.mktemp("prometheus")
    stack = Stack(log_dir=work / "stack-logs")
    endpoints = stack.start()
    port, ghost = free_port(), free_port()  # ghost: a target nothing listens on, so up == 0 for it
    targets = [{"targets": [url.removeprefix("http://").removesuffix("/metrics")],
                "labels": {"service": name, "namespace": NAMESPACE, "pod": f"{name}-0"}}
               for name, url in endpoints.metrics.items()]
    targets.append({"targets": [f"127.0.0.1:{ghost}"], "labels": {"service": "ghost", "namespace": NAMESPACE,
                                                                  "pod": "ghost-0"}})
    # As the chart's ServiceMonitor does: job="nanolens", service/namespace/pod target labels,
    # and the processes' own `service` label honoured.
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
              "rule_files": [str(RULES)],
              "scrape_configs": [{"job_name": "nanolens", "honor_labels": True, "static_configs": targets}]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = open(work / "prometheus.log", "wb")
    server = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}",
                               f"--storage.tsdb.path={work / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, 60, server)
        prom = Prometheus(f"http://127.0.0.1:{port}")
        load(endpoints.gateway, work / "samples")
        # every target scraped after the load, and the rules evaluated on it
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            done = prom.query('min(time() - timestamp(up{job="nanolens"}))')
            if done and float(done[0]["value"][1]) < 1 and _pending(prom):
                break
            time.sleep(0.5)
        time.sleep(3)  # a few more scrapes after the last call
        yield prom, endpoints
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
        stack.stop()


def _pending(prom: Prometheus) -> bool:
    return prom.alerts().get("NanoLensInstanceDown", {}).get("state") in ("pending", "firing")


def load(gateway: str, folder: Path) -> None:
    """Every demo sample analysed, then again once Prometheus has seen the series (a counter's
    first scrape is its baseline: a rate needs an increase after it) with ``force``, and once more
    from storage; a refused option, a missing object, and an upload over different bytes under a
    taken key (a server-side refusal)."""
    client = GatewayClient(gateway)
    try:
        kinds = {analysis.name: kind for kind, (_, analysis) in analyses().items()}  # the samples name their analysis
        uploaded = [(client.upload(s["path"], timeout=120).object, kinds[s["kind"]], s.get("options"))
                    for s in write_samples(folder).values()]
        for ref, kind, options in uploaded:
            client.analyze(ref, kind, options=options, timeout=300)
        time.sleep(3)  # three scrapes
        for ref, kind, options in uploaded:
            client.analyze(ref, kind, options=options, force=True, timeout=300)
            assert client.analyze(ref, kind, options=options, timeout=300).cached
        with pytest.raises(grpc.RpcError) as refused:
            client.analyze(ref, gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, options={"no_such_option": "1"}, timeout=60)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        missing = common_pb2.ObjectRef(bucket=ref.bucket, key="no/such/object.tif")
        with pytest.raises(grpc.RpcError) as absent:
            client.analyze(missing, gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, timeout=60)
        assert absent.value.code() == grpc.StatusCode.NOT_FOUND
        first, second = folder / "a.txt", folder / "b.txt"
        first.write_text("0 1\n1 2\n")
        second.write_text("0 1\n1 3\n")
        client.upload(first, key="taken/key.txt", timeout=60)
        with pytest.raises(grpc.RpcError) as taken:
            client.upload(second, key="taken/key.txt", timeout=60)
        assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    finally:
        client.close()


def test_every_target_is_scraped_with_the_labels_the_chart_gives(scraped):
    prom, endpoints = scraped
    up = {r["metric"]["service"]: float(r["value"][1]) for r in prom.query('up{job="nanolens"}')}
    assert up == {**{name: 1.0 for name in endpoints.metrics}, "ghost": 0.0}
    build = {r["metric"]["service"] for r in prom.query(f'nanolens_build_info{{namespace="{NAMESPACE}"}}')}
    assert build == set(endpoints.metrics)


@pytest.mark.parametrize("board, title, expr", dashboard_queries(), ids=lambda v: v if " " not in v else None)
def test_every_dashboard_panel_reads_data(scraped, board, title, expr):
    prom, _ = scraped
    result = prom.query(expr)
    values = [float(r["value"][1]) for r in result]
    assert any(math.isfinite(v) for v in values), f"{board} / {title!r}: {expr} returned {result}"


def test_every_alert_evaluates_and_its_state_agrees_with_its_expression(scraped):
    """Each rule evaluates without error; the series its expression returns now are exactly the
    alerts it holds pending or firing (so a threshold that the load crossed, as a slow movie
    analysis on a shared CPU can for the p99 latency, is seen as such); the target that is down
    trips NanoLensInstanceDown and nothing else trips on the healthy services' account."""
    prom, endpoints = scraped
    rules = {r["alert"]: r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r}
    alerts = prom.alerts()
    assert set(alerts) == set(rules)
    for name, alert in alerts.items():
        assert alert["health"] == "ok", (name, alert.get("lastError"))
        now = {frozenset((k, v) for k, v in r["metric"].items() if k != "__name__")
               for r in prom.query(rules[name]["expr"])}
        held = {frozenset((k, v) for k, v in a["labels"].items() if k not in ("alertname", *rules[name]["labels"]))
                for a in alert["alerts"]}
        assert held == now, (name, held, now)
    down = alerts["NanoLensInstanceDown"]
    assert down["state"] in ("pending", "firing")
    assert {a["labels"]["service"] for a in down["alerts"]} == {"ghost"}
    for name in ("NanoLensHighErrorRatio", "NanoLensNoModelsLoaded", "NanoLensBatchQueueWaitHigh"):
        assert alerts[name]["state"] == "inactive", (name, alerts[name]["alerts"])


def test_every_metric_an_alert_reads_exists_with_the_job_label(scraped):
    prom, _ = scraped
    rules = [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    names = {name for rule in rules for name in promql_metric_names(rule["expr"])}
    assert "up" in names and "grpc_server_handled_total" in names
    missing = sorted(n for n in names if not prom.query(f'count({{__name__="{n}", job="nanolens"}})'))
    assert not missing, f"metrics the alert rules read that no NanoLens process exports: {missing}"
