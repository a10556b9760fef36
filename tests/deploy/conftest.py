"""Fixtures for the deployment tests: the loaded chart and a cached renderer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # deploy_support, whatever the import mode

from deploy_support import CHART, NAMESPACE, RELEASE, Rendered, deep_merge  # noqa: E402

helm = pytest.importorskip("helm_python", reason="helm-python-sdk is not installed (pip install -e '.[dev]')")


@pytest.fixture(scope="session")
def chart():
    with helm.Chart.load(CHART) as loaded:
        yield loaded


@pytest.fixture(scope="session")
def render(chart):
    """render(values) -> Rendered; results are cached per values."""
    cache: dict[str, Rendered] = {}

    def _render(values: dict | None = None) -> Rendered:
        key = repr(values)
        if key not in cache:
            cache[key] = Rendered(chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True))
        return cache[key]

    return _render


@pytest.fixture(scope="session")
def enabled_services(chart):
    """enabled_services(values) -> {name: merged service values} as the chart resolves them."""

    def _enabled(values: dict) -> dict[str, dict]:
        merged = chart.merge_values(values)
        out = {}
        for name, raw in merged["services"].items():
            svc = deep_merge(merged["serviceDefaults"], raw or {})
            if svc.get("enabled"):
                out[name] = svc
        return out

    return _enabled
