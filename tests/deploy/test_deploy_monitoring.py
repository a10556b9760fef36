"""Alert rules (promtool check + unit tests) and the generated Grafana dashboards."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess

import pytest
import yaml
from deploy_support import (
    DASHBOARDS,
    HISTOGRAMS,
    KNOWN_SERIES,
    REPO,
    RULE_TESTS,
    RULES,
    find_promtool,
)

from support import promql_metric_names

EXPECTED_ALERTS = {
    "NanoLensHighErrorRatio",
    "NanoLensHighLatencyP99",
    "NanoLensNoModelsLoaded",
    "NanoLensInstanceDown",
    "NanoLensBatchQueueWaitHigh",
}


@pytest.fixture(scope="module")
def promtool():
    path = find_promtool()
    if path is None:
        pytest.skip("promtool not found on PATH or in .tools/bin: run `make tools` (Debian package `prometheus`)")
    return path


def rules() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def rule_test_files() -> list:
    return sorted(RULE_TESTS.glob("*.yaml"))


# --- promtool -----------------------------------------------------------------------------------


def test_promtool_check_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout + result.stderr


def test_promtool_rule_unit_tests(promtool):
    files = [str(p.relative_to(REPO)) for p in rule_test_files()]
    assert files
    result = subprocess.run([promtool, "test", "rules", *files], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


# --- rule content -------------------------------------------------------------------------------


def test_alerts_are_complete():
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert set(alerts) == EXPECTED_ALERTS
    for name, rule in alerts.items():
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip() and rule["annotations"]["description"].strip(), name
        assert 'job="nanolens"' in rule["expr"], f"{name} must not match other applications' series"


def test_error_ratio_ignores_client_errors():
    (rule,) = [r for r in rules() if r.get("alert") == "NanoLensHighErrorRatio"]
    assert 'grpc_code!~"OK|InvalidArgument|NotFound"' in rule["expr"]


def test_every_alert_is_unit_tested_both_ways():
    """Each alert has a promtool case where it fires and one where it stays silent."""
    fires, silent = set(), set()
    for path in rule_test_files():
        spec = yaml.safe_load(path.read_text())
        assert spec["rule_files"] == ["../../helm/nanolens/files/prometheus/nanolens.rules.yaml"], path
        for test in spec["tests"]:
            for case in test.get("alert_rule_test", []):
                (fires if case.get("exp_alerts") else silent).add(case["alertname"])
    assert fires == EXPECTED_ALERTS
    assert silent == EXPECTED_ALERTS


def test_rules_read_only_known_metrics():
    for rule in rules():
        names = promql_metric_names(rule["expr"])
        assert names, rule
        assert names <= KNOWN_SERIES, f"{rule.get('alert')}: unknown metrics {names - KNOWN_SERIES}"


# --- dashboards ---------------------------------------------------------------------------------


def _generator():
    path = REPO / "deploy" / "grafana" / "generate_dashboards.py"
    spec = importlib.util.spec_from_file_location("nanolens_generate_dashboards", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> dict[str, str]:
    pytest.importorskip("grafana_foundation_sdk")
    return _generator().render()


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def test_committed_dashboards_equal_a_fresh_generation(generated):
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert committed.keys() == generated.keys(), "run deploy/grafana/generate_dashboards.py"
    for name, text in generated.items():
        assert committed[name] == text, f"{name} is stale: run deploy/grafana/generate_dashboards.py"


def _panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


def _exprs(dashboard: dict) -> list[str]:
    return [t["expr"] for p in _panels(dashboard) for t in p.get("targets", []) if "expr" in t]


def _variable_metrics(dashboard: dict) -> set[str]:
    names = set()
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        match = re.fullmatch(r"label_values\((.*),\s*\w+\)", var["query"])
        assert match, var["query"]
        names |= promql_metric_names(match.group(1))
    return names


def test_dashboards_read_only_known_metrics(dashboards):
    for name, dashboard in dashboards.items():
        used = set().union(*(promql_metric_names(e) for e in _exprs(dashboard))) | _variable_metrics(dashboard)
        assert used <= KNOWN_SERIES, f"{name}: unknown metrics {sorted(used - KNOWN_SERIES)}"
        # A histogram is only ever read through its _bucket/_sum/_count series.
        assert not used & HISTOGRAMS


def test_overview_covers_the_golden_signals(dashboards):
    overview = dashboards["nanolens-overview.json"]
    exprs = _exprs(overview)
    used = set().union(*(promql_metric_names(e) for e in exprs))
    for metric in (
        "grpc_server_handled_total",
        "grpc_server_handling_seconds_bucket",
        "nanolens_stage_duration_seconds_sum",
        "nanolens_batch_size_bucket",
        "nanolens_batch_queue_wait_seconds_bucket",
        "nanolens_models_loaded",
        "nanolens_build_info",
        "up",
    ):
        assert metric in used, metric
    for quantile in ("0.5", "0.95", "0.99"):
        assert any(
            f"histogram_quantile({quantile}, " in e and "grpc_server_handling_seconds" in e and "grpc_method" in e
            for e in exprs
        ), quantile
    assert any("grpc_code" in e and "grpc_server_handled_total" in e for e in exprs)  # errors by code
    assert any("by (service, stage)" in e for e in exprs)  # stage breakdown


def test_overview_has_service_variable_and_every_query_uses_it(dashboards):
    overview = dashboards["nanolens-overview.json"]
    variables = {v["name"]: v for v in overview["templating"]["list"]}
    assert {"datasource", "namespace", "service"} <= variables.keys()
    assert variables["service"]["multi"] and variables["service"]["includeAll"]
    for expr in _exprs(overview):
        assert 'service=~"$service"' in expr and 'job="nanolens"' in expr, expr


def test_dashboard_panels_are_well_formed(dashboards):
    for name, dashboard in dashboards.items():
        assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
        panels = _panels(dashboard)
        ids = [p["id"] for p in panels]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in panels:
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24, panel["title"]
            if panel["type"] != "row":
                assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
                assert panel.get("targets"), panel["title"]
