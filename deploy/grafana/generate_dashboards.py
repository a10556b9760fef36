"""Generate the NanoLens Grafana dashboards as code (grafana-foundation-sdk 0.0.21).

The JSON is written into the Helm chart (deploy/helm/nanolens/dashboards/), which ships each file
as a ConfigMap labelled for the Grafana dashboard sidecar. The committed JSON must equal a fresh
generation; tests/deploy checks it, so edit this script, never the JSON:

    .venv/bin/python deploy/grafana/generate_dashboards.py           # rewrite the JSON
    .venv/bin/python deploy/grafana/generate_dashboards.py --check   # exit 1 when stale

Every query selects job="nanolens" (set by the chart's ServiceMonitor) and the dashboard's
`namespace` and `service` template variables. Metric names are the ones the NanoLens processes
export: go-grpc-prometheus server metrics, nanolens_* pipeline metrics and process_* metrics.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

with warnings.catch_warnings():
    # The classic (v1) dashboard builder is deprecated in favour of dashboardv2, which only
    # Grafana 12+ can load; the sidecar-provisioned classic JSON works on every Grafana.
    warnings.simplefilter("ignore", DeprecationWarning)
    from grafana_foundation_sdk.builders import common as cb
    from grafana_foundation_sdk.builders import dashboard as db
    from grafana_foundation_sdk.builders import heatmap, stat, table, timeseries
    from grafana_foundation_sdk.builders.prometheus import Dataquery as PromQuery
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import common as cm
    from grafana_foundation_sdk.models import dashboard as dm
    from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT_DIR = Path(__file__).resolve().parents[1] / "helm" / "nanolens" / "dashboards"

DATASOURCE = cm.DataSourceRef(type_val="prometheus", uid="${datasource}")
# Label selector shared by every query.
SEL = 'job="nanolens", namespace=~"$namespace", service=~"$service"'
RATE = "$__rate_interval"


def _query(expr: str, legend: str, ref: str = "A") -> PromQuery:
    return PromQuery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def _legend_table() -> cb.VizLegendOptions:
    return (
        cb.VizLegendOptions()
        .display_mode(cm.LegendDisplayMode.TABLE)
        .placement(cm.LegendPlacement.BOTTOM)
        .show_legend(True)
        .calcs(["mean", "max", "lastNotNull"])
        .sort_by("Max")
        .sort_desc(True)
    )


def _tooltip() -> cb.VizTooltipOptions:
    return cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)


def _timeseries(
    pid: int,
    title: str,
    description: str,
    unit: str,
    *queries: PromQuery,
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .id(pid)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .min(0)
        .span(width)
        .height(height)
        .line_width(1)
        .fill_opacity(10 if not stacked else 40)
        .legend(_legend_table())
        .tooltip(_tooltip())
    )
    if stacked:
        panel = panel.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL))
    for query in queries:
        panel = panel.with_target(query)
    return panel


def _stat(
    pid: int,
    title: str,
    description: str,
    unit: str,
    query: PromQuery,
    width: int = 6,
    thresholds: list[dm.Threshold] | None = None,
) -> stat.Panel:
    panel = (
        stat.Panel()
        .id(pid)
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
        .graph_mode(cm.BigValueGraphMode.AREA)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .with_target(query)
    )
    if thresholds:
        panel = panel.thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(thresholds))
    return panel


def _quantile(q: float, metric: str, by: str) -> str:
    return f"histogram_quantile({q}, sum by ({by}, le) (rate({metric}_bucket{{{SEL}}}[{RATE}])))"


def build_overview() -> db.Dashboard:
    """The NanoLens overview: traffic, errors, latency, pipeline stages, batching, fleet."""
    error_codes = 'grpc_code!="OK"'
    dash = (
        db.Dashboard("NanoLens / Overview")
        .uid("nanolens-overview")
        .description(
            "Request rate, errors, latency, pipeline stages, batching and model state of the NanoLens gRPC services."
        )
        .tags(["nanolens", "grpc", "generated"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(
            db.QueryVariable("namespace")
            .label("Namespace")
            .datasource(DATASOURCE)
            .query('label_values(nanolens_build_info{job="nanolens"}, namespace)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        .with_variable(
            db.QueryVariable("service")
            .label("Service")
            .datasource(DATASOURCE)
            .query('label_values(nanolens_build_info{job="nanolens", namespace=~"$namespace"}, service)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
        )
        # --- Fleet at a glance -------------------------------------------------------------
        .with_row(db.Row("Fleet").id(100))
        .with_panel(
            _stat(
                1,
                "Pods up",
                "Scrape targets up, per service (up).",
                "short",
                _query(f"sum by (service) (up{{{SEL}}})", "{{service}}"),
            )
        )
        .with_panel(
            _stat(
                2,
                "Models loaded",
                "nanolens_models_loaded summed over the pods of each service. "
                "0 on a domain service means it cannot answer.",
                "short",
                _query(f"sum by (service) (nanolens_models_loaded{{{SEL}}})", "{{service}}"),
                thresholds=[dm.Threshold(value=None, color="red"), dm.Threshold(value=1, color="green")],
            )
        )
        .with_panel(
            _stat(
                3,
                "Request rate",
                "gRPC requests handled per second, all services selected.",
                "reqps",
                _query(f"sum(rate(grpc_server_handled_total{{{SEL}}}[{RATE}]))", "requests/s"),
            )
        )
        .with_panel(
            _stat(
                4,
                "Server error ratio",
                "Share of requests ending with a server-side code (not OK, InvalidArgument, NotFound).",
                "percentunit",
                _query(
                    f'sum(rate(grpc_server_handled_total{{{SEL}, grpc_code!~"OK|InvalidArgument|NotFound"}}[{RATE}]))'
                    f" / sum(rate(grpc_server_handled_total{{{SEL}}}[{RATE}]))",
                    "errors",
                ),
                thresholds=[
                    dm.Threshold(value=None, color="green"),
                    dm.Threshold(value=0.01, color="orange"),
                    dm.Threshold(value=0.05, color="red"),
                ],
            )
        )
        .with_panel(
            table.Panel()
            .id(5)
            .title("Build info")
            .description("Version and ONNX Runtime execution provider of every pod (nanolens_build_info).")
            .datasource(DATASOURCE)
            .span(24)
            .height(6)
            .with_target(
                PromQuery()
                .expr(f"max by (namespace, service, pod, version, provider) (nanolens_build_info{{{SEL}}})")
                .format(PromQueryFormat.TABLE)
                .instant()
                .ref_id("A")
                .datasource(DATASOURCE)
            )
        )
        # --- Traffic and errors -----------------------------------------------------------------
        .with_row(db.Row("Traffic and errors").id(101))
        .with_panel(
            _timeseries(
                10,
                "Request rate by service / method",
                "Requests completed per second (grpc_server_handled_total).",
                "reqps",
                _query(
                    f"sum by (service, grpc_method) (rate(grpc_server_handled_total{{{SEL}}}[{RATE}]))",
                    "{{service}} {{grpc_method}}",
                ),
            )
        )
        .with_panel(
            _timeseries(
                11,
                "Error ratio by code",
                "Share of requests per non-OK status code. InvalidArgument and NotFound are usually "
                "the caller's fault; Unavailable, Internal, ResourceExhausted, DeadlineExceeded are ours.",
                "percentunit",
                _query(
                    f"sum by (service, grpc_code) (rate(grpc_server_handled_total{{{SEL}, {error_codes}}}[{RATE}]))"
                    f" / ignoring (grpc_code) group_left"
                    f" sum by (service) (rate(grpc_server_handled_total{{{SEL}}}[{RATE}]))",
                    "{{service}} {{grpc_code}}",
                ),
                stacked=True,
            )
        )
        .with_panel(
            _timeseries(
                12,
                "Messages received / sent",
                "Stream messages per second (grpc_server_msg_received_total, grpc_server_msg_sent_total).",
                "short",
                _query(
                    f"sum by (service) (rate(grpc_server_msg_received_total{{{SEL}}}[{RATE}]))", "{{service}} received"
                ),
                _query(
                    f"sum by (service) (rate(grpc_server_msg_sent_total{{{SEL}}}[{RATE}]))", "{{service}} sent", "B"
                ),
            )
        )
        .with_panel(
            _timeseries(
                13,
                "In-flight requests",
                "Started minus handled requests (grpc_server_started_total - grpc_server_handled_total), "
                "averaged over the interval.",
                "short",
                _query(
                    f"sum by (service) (increase(grpc_server_started_total{{{SEL}}}[{RATE}]))"
                    f" - sum by (service) (increase(grpc_server_handled_total{{{SEL}}}[{RATE}]))",
                    "{{service}}",
                ),
            )
        )
        # --- Latency -------------------------------------------------------------------------------
        .with_row(db.Row("Latency").id(102))
        .with_panel(
            _timeseries(
                20,
                "p50 latency by service / method",
                "grpc_server_handling_seconds, 50th percentile.",
                "s",
                _query(
                    _quantile(0.5, "grpc_server_handling_seconds", "service, grpc_method"),
                    "{{service}} {{grpc_method}}",
                ),
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                21,
                "p95 latency by service / method",
                "grpc_server_handling_seconds, 95th percentile.",
                "s",
                _query(
                    _quantile(0.95, "grpc_server_handling_seconds", "service, grpc_method"),
                    "{{service}} {{grpc_method}}",
                ),
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                22,
                "p99 latency by service / method",
                "grpc_server_handling_seconds, 99th percentile (alert: > 2 s for unary calls).",
                "s",
                _query(
                    _quantile(0.99, "grpc_server_handling_seconds", "service, grpc_method"),
                    "{{service}} {{grpc_method}}",
                ),
                width=8,
            )
        )
        # --- Pipeline ------------------------------------------------------------------------------
        .with_row(db.Row("Pipeline and batching").id(103))
        .with_panel(
            _timeseries(
                30,
                "Mean time per stage",
                "Average seconds spent per call in each stage (fetch, decode, preprocess, inference, "
                "postprocess, store), stacked: where the time goes.",
                "s",
                _query(
                    f"sum by (service, stage) (rate(nanolens_stage_duration_seconds_sum{{{SEL}}}[{RATE}]))"
                    f" / sum by (service, stage) (rate(nanolens_stage_duration_seconds_count{{{SEL}}}[{RATE}]))",
                    "{{service}} {{stage}}",
                ),
                stacked=True,
            )
        )
        .with_panel(
            _timeseries(
                31,
                "p95 stage latency",
                "nanolens_stage_duration_seconds, 95th percentile per stage.",
                "s",
                _query(_quantile(0.95, "nanolens_stage_duration_seconds", "service, stage"), "{{service}} {{stage}}"),
            )
        )
        .with_panel(
            heatmap.Panel()
            .id(32)
            .title("Batch size distribution")
            .description(
                "How full the dynamic batches are (nanolens_batch_size). Mostly size 1 "
                "under load means the batch delay is too short to help."
            )
            .datasource(DATASOURCE)
            .span(8)
            .height(8)
            .calculate(False)
            .with_target(
                PromQuery()
                .expr(f"sum by (le) (increase(nanolens_batch_size_bucket{{{SEL}}}[{RATE}]))")
                .format(PromQueryFormat.HEATMAP)
                .legend_format("{{le}}")
                .ref_id("A")
                .datasource(DATASOURCE)
            )
        )
        .with_panel(
            _timeseries(
                33,
                "Batch queue wait p95",
                "Time requests wait for a batch slot (nanolens_batch_queue_wait_seconds, p95; alert: > 250 ms).",
                "s",
                _query(_quantile(0.95, "nanolens_batch_queue_wait_seconds", "service, model"), "{{service}} {{model}}"),
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                34,
                "Batch queue depth",
                "Requests waiting in the batching queue (nanolens_batch_queue_depth).",
                "short",
                _query(f"sum by (service, model) (nanolens_batch_queue_depth{{{SEL}}})", "{{service}} {{model}}"),
                width=8,
            )
        )
        .with_panel(
            _timeseries(
                35,
                "Mean batch size",
                "Average requests per executed batch (nanolens_batch_size).",
                "short",
                _query(
                    f"sum by (service, model) (rate(nanolens_batch_size_sum{{{SEL}}}[{RATE}]))"
                    f" / sum by (service, model) (rate(nanolens_batch_size_count{{{SEL}}}[{RATE}]))",
                    "{{service}} {{model}}",
                ),
            )
        )
        .with_panel(
            _timeseries(
                36,
                "Models loaded per pod",
                "nanolens_models_loaded per pod.",
                "short",
                _query(f"max by (service, pod) (nanolens_models_loaded{{{SEL}}})", "{{service}} {{pod}}"),
            )
        )
        # --- Liquid-phase EM movies ----------------------------------------------------------------
        .with_row(db.Row("Liquid-phase EM movies").id(108))
        .with_panel(
            _timeseries(
                80,
                "LPEM frames per second",
                "Movie frames segmented and linked per second, all pods (nanolens_lpem_frames_total).",
                "short",
                _query(f"sum by (service) (rate(nanolens_lpem_frames_total{{{SEL}}}[{RATE}]))", "{{service}}"),
            )
        )
        .with_panel(
            _timeseries(
                81,
                "LPEM particles tracked per second",
                "Particle detections linked into tracks per second (nanolens_lpem_particles_total).",
                "short",
                _query(f"sum by (service) (rate(nanolens_lpem_particles_total{{{SEL}}}[{RATE}]))", "{{service}}"),
            )
        )
        # --- SEM images --------------------------------------------------------------------------
        .with_row(db.Row("SEM images").id(109))
        .with_panel(
            _timeseries(
                82,
                "SEM images per second, by output",
                "Images through the autoencoder per second, by what was asked: embed (every image), lens, "
                "anomaly, classify (nanolens_sem_images_total).",
                "short",
                _query(f"sum by (output) (rate(nanolens_sem_images_total{{{SEL}}}[{RATE}]))", "{{output}}"),
            )
        )
        .with_panel(
            _timeseries(
                83,
                "SEM anomaly score, median and p95",
                "Percentile of each image's reconstruction error among the autoencoder's training tiles "
                "(nanolens_sem_anomaly_percentile); a p95 that climbs to 99 means the instruments send images "
                "unlike anything the model was trained on.",
                "short",
                _query(f"histogram_quantile(0.5, sum by (le) (rate(nanolens_sem_anomaly_percentile_bucket{{{SEL}}}"
                       f"[{RATE}])))", "median"),
                _query(f"histogram_quantile(0.95, sum by (le) (rate(nanolens_sem_anomaly_percentile_bucket{{{SEL}}}"
                       f"[{RATE}])))", "p95"),
            )
        )
        # --- Processes -----------------------------------------------------------------------------
        .with_row(db.Row("Processes").id(104))
        .with_panel(
            _timeseries(
                40,
                "CPU per pod",
                "Cores used (process_cpu_seconds_total).",
                "short",
                _query(
                    f"sum by (service, pod) (rate(process_cpu_seconds_total{{{SEL}}}[{RATE}]))", "{{service}} {{pod}}"
                ),
            )
        )
        .with_panel(
            _timeseries(
                41,
                "Resident memory per pod",
                "process_resident_memory_bytes.",
                "bytes",
                _query(f"max by (service, pod) (process_resident_memory_bytes{{{SEL}}})", "{{service}} {{pod}}"),
            )
        )
    )
    return dash


DASHBOARDS = {"nanolens-overview.json": build_overview}


def render() -> dict[str, str]:
    """File name -> dashboard JSON text (stable: sorted keys, trailing newline)."""
    encoder = JSONEncoder(sort_keys=True, indent=2)
    return {name: encoder.encode(build().build()) + "\n" for name, build in DASHBOARDS.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON is stale")
    parser.add_argument("--out", type=Path, default=OUT_DIR, help="output folder (default: the chart's)")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        json.loads(text)  # sanity: valid JSON
        print(f"wrote {path}")
    if stale:
        print("stale dashboards (run deploy/grafana/generate_dashboards.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
