#!/usr/bin/env python3
"""memtrace's Grafana dashboards, built with Grafana's foundation SDK (its typed dashboard model).

    python deploy/grafana/generate.py           # (re)write deploy/grafana/dashboards/*.json
    python deploy/grafana/generate.py --check   # fail if they differ from what this file builds,
                                                # or do not decode through Grafana's model

`cargo xtask grafana` runs it in target/venv with the pinned SDK (deploy/grafana/requirements.txt);
`cargo xtask test` runs the check. Only metric names that exist are used: the daemon's (README,
"Metrics"), the recording rules of deploy/prometheus/memtrace-rules.yml, `memtrace cluster
serve`'s (memtrace/src/cluster/relay.rs), and Prometheus' own `ALERTS` and
`scrape_duration_seconds`.
"""

import argparse
import difflib
import json
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus as prom
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prom_model

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS = ["memtrace", "memory", "ebpf"]
# Keys of a Prometheus annotation that Grafana's dashboard model (the SDK's AnnotationQuery) does
# not declare: the Prometheus datasource reads them. The model check ignores exactly these.
ANNOTATION_EXTENSION_KEYS = ("step", "tagKeys", "textFormat", "titleFormat", "useValueForTime")

# A workload's key: `namespace/Kind/name` for a Kubernetes workload (README, "Workload
# identity"); the namespace variable takes the first part. Other keys (systemd units, containers,
# comms) have no namespace and are kept by the namespace filter's `(/.*)?` when it is All (`.*`).
NAMESPACE_REGEX = r"/^([a-z0-9][a-z0-9-]*)\/[A-Z][A-Za-z]+\/[^/]+$/"
WORKLOAD_FILTER = 'workload=~"$workload", workload=~"${namespace}(/.*)?"'


class PrometheusAnnotation(model.AnnotationQuery):
    """An annotation of the Prometheus datasource: the model's fields plus the ones the
    datasource reads (title and text templates, tags from labels, step)."""

    def __init__(self, title_format: str, text_format: str, tag_keys: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.extension = {
            "step": "15s",
            "tagKeys": tag_keys,
            "textFormat": text_format,
            "titleFormat": title_format,
            "useValueForTime": False,
        }

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(self.extension)
        return payload


class Annotation(dash.AnnotationQuery):
    def __init__(self, name: str, expr: str, title: str, text: str, tag_keys: str) -> None:
        super().__init__()
        self._internal = PrometheusAnnotation(
            title, text, tag_keys, name=name, datasource=DATASOURCE, enable=True,
            icon_color="red", expr=expr,
        )


def query(expr: str, legend: str = "__auto", instant: bool = False) -> prom.Dataquery:
    q = prom.Dataquery().expr(expr).datasource(DATASOURCE).legend_format(legend)
    if instant:
        return q.instant().format(prom_model.PromQueryFormat.TABLE)
    return q.range()


def with_queries(panel, queries: list[prom.Dataquery]):
    for index, q in enumerate(queries):
        panel = panel.with_target(q.ref_id(chr(ord("A") + index)))
    return panel


def graph(
    title: str,
    description: str,
    unit: str,
    queries: list[prom.Dataquery],
    width: int = 12,
    stacked: bool = False,
    min_val: float | None = 0,
    max_val: float | None = None,
) -> timeseries.Panel:
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .fill_opacity(20 if stacked else 8)
        .line_width(1)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.TABLE)
            .placement(common.LegendPlacement.RIGHT if width == 24 else common.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
        .tooltip(common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING))
    )
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    return with_queries(panel, queries)


def grid(
    title: str,
    description: str,
    unit: str,
    queries: list[prom.Dataquery],
    width: int = 24,
    hidden: tuple[str, ...] = ("Time", "__name__", "job", "Value"),
    value_name: str = "value",
) -> table.Panel:
    """A table of instant queries; the label columns stay, `Value` is renamed."""
    organize = model.DataTransformerConfig(
        id_val="organize",
        options={
            "excludeByName": {name: True for name in hidden if name != "Value"},
            "renameByName": {"Value": value_name},
        },
    )
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8)
        .with_transformation(organize)
        .align(common.FieldTextAlignment.AUTO)
        .inspect(False)
        .sort_by([common_builders.TableSortByFieldState().display_name(value_name).desc(True)])
    )
    return with_queries(panel, queries)


def single(title: str, description: str, unit: str, q: prom.Dataquery, width: int = 6) -> stat.Panel:
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(4)
    )
    return with_queries(panel, [q])


def datasource_variable() -> dash.DatasourceVariable:
    return (
        dash.DatasourceVariable("datasource")
        .label("Data source")
        .description("The Prometheus that scrapes the memtrace daemons (and evaluates memtrace-rules.yml).")
        .type("prometheus")
    )


def label_variable(
    name: str,
    label: str,
    description: str,
    selector: str,
    label_name: str,
    multi: bool = True,
    regex: str | None = None,
    hide: model.VariableHide = model.VariableHide.DONT_HIDE,
    all_value: str | None = ".*",
) -> dash.QueryVariable:
    """A `label_values(selector, label)` variable (Grafana's Prometheus variable query). All is
    `all_value` (`.*`: every value, also ones that appear later), or with None the regex of the
    values found."""
    variable = (
        dash.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query(f"label_values({selector}, {label_name})")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(model.VariableSort.ALPHABETICAL_ASC)
        .hide(hide)
    )
    if multi:
        variable = variable.multi(True).include_all(True)
        if all_value is not None:
            variable = variable.all_value(all_value)
        variable = variable.current(model.VariableOption(selected=True, text="All", value="$__all"))
    if regex is not None:
        variable = variable.regex(regex)
    return variable


def namespace_variable(selector: str) -> dash.QueryVariable:
    return label_variable(
        "namespace",
        "Namespace",
        "Kubernetes namespace, the first part of a workload key `namespace/Kind/name`. All also "
        "keeps the workloads outside Kubernetes (systemd units, containers, processes).",
        selector,
        "workload",
        regex=NAMESPACE_REGEX,
    )


def workload_variable(selector: str) -> dash.QueryVariable:
    return label_variable(
        "workload",
        "Workload",
        "The cross-node workload key: `namespace/Kind/name`, a container, a systemd unit or a comm "
        "(README, \"Workload identity\").",
        selector,
        "workload",
    )


def base(title: str, uid: str, description: str) -> dash.Dashboard:
    return (
        dash.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("30s")
        .time("now-1h", "now")
        .timezone("browser")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .link(
            dash.DashboardLink("memtrace dashboards")
            .type(model.DashboardLinkType.DASHBOARDS)
            .tags(["memtrace"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def oom_annotation(selector: str) -> Annotation:
    """An annotation at every OOM kill: a victim workload's counter that grew, or appeared (its
    first kill: a series that did not exist a minute before)."""
    expr = (
        f"(memtrace_oom_kills_total{{{selector}}} - memtrace_oom_kills_total{{{selector}}} offset 1m > 0)"
        f" or (memtrace_oom_kills_total{{{selector}}} unless memtrace_oom_kills_total{{{selector}}} offset 1m)"
    )
    return Annotation(
        "OOM kills",
        expr,
        "OOM kill: {{comm}}",
        "workload {{workload}}, cgroup {{cgroup}}, target {{instance}}",
        "workload,comm",
    )


# ------------------------------------------------------------------------------------------------
# Node


def node_dashboard() -> dash.Dashboard:
    i = 'instance=~"$instance"'
    w = f"{i}, {WORKLOAD_FILTER}"
    d = (
        base(
            "memtrace / Node",
            "memtrace-node",
            "One node as its memtrace daemon sees it: pressure by workload, RSS, faults, reclaim "
            "stalls, PSI, fragmentation, OOM kills, and memtrace's own health.",
        )
        .with_variable(datasource_variable())
        .with_variable(
            label_variable(
                "node", "Node", "The node (`memtrace daemon --node-name`, memtrace_node_info).",
                "memtrace_node_info", "node", multi=False,
            )
        )
        .with_variable(
            label_variable(
                "instance", "Scrape target", "The scrape target(s) of the chosen node's daemon.",
                'memtrace_node_info{node=~"$node"}', "instance",
                hide=model.VariableHide.HIDE_VARIABLE, all_value=None,
            )
        )
        .with_variable(namespace_variable(f"memtrace_process_processes{{{i}}}"))
        .with_variable(
            workload_variable(
                f'memtrace_process_processes{{{i}, workload=~"${{namespace}}(/.*)?"}}'
            )
        )
        .annotation(oom_annotation(w))
    )
    d = (
        d.with_row(dash.Row("Pressure"))
        .with_panel(
            graph(
                "Pressure score by workload (top 10)",
                "memtrace_process_pressure_score: 0–100 per workload, the highest of its processes "
                "(major faults, reclaim stalls, usage near the cgroup limit, PSI, a recent OOM kill; "
                "README, \"Memory-pressure score\"). 40 needs two symptoms.",
                "none",
                [query(f"topk(10, max by (workload) (memtrace_process_pressure_score{{{w}}}))", "{{workload}}")],
                max_val=100,
            )
        )
        .with_panel(
            graph(
                "Node PSI memory (avg10)",
                "The kernel's pressure stall information for memory (/proc/pressure/memory avg10): the "
                "share of the last 10 s some (or all, full) tasks waited for memory.",
                "percentunit",
                [query(f"memtrace_node_memory_pressure_avg10_ratio{{{i}}}", "{{kind}}")],
            )
        )
        .with_panel(
            graph(
                "Memory stall time (PSI totals)",
                "rate() of /proc/pressure/memory's total stall time: seconds stalled per second.",
                "percentunit",
                [query(f"rate(memtrace_node_memory_pressure_seconds_total{{{i}}}[$__rate_interval])", "{{kind}}")],
            )
        )
        .with_panel(
            graph(
                "Cgroup pressure score (top 10)",
                "memtrace_cgroup_pressure_score: the same 0–100 score per cgroup.",
                "none",
                [query(f'topk(10, memtrace_cgroup_pressure_score{{{i}, cgroup!="~other"}})', "{{cgroup}}")],
                max_val=100,
            )
        )
        .with_row(dash.Row("Memory"))
        .with_panel(
            graph(
                "RSS by type",
                "memtrace_process_rss_bytes summed over the selected workloads, by type (anon, file, "
                "shmem; swap is swapped-out memory, not resident), stacked.",
                "bytes",
                [query(f"sum by (type) (memtrace_process_rss_bytes{{{w}}})", "{{type}}")],
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "RSS by workload (top 10)",
                "Resident memory (anon + file + shmem) per workload.",
                "bytes",
                [
                    query(
                        f'topk(10, sum by (workload) (memtrace_process_rss_bytes{{{w}, type=~"anon|file|shmem"}}))',
                        "{{workload}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Node memory",
                "/proc/meminfo: MemTotal, MemAvailable and SwapFree (with --cgroup-root the node's "
                "memory is still the machine's).",
                "bytes",
                [
                    query(f"memtrace_node_memory_total_bytes{{{i}}}", "total"),
                    query(f"memtrace_node_memory_available_bytes{{{i}}}", "available"),
                    query(f"memtrace_node_swap_free_bytes{{{i}}}", "swap free"),
                ],
            )
        )
        .with_panel(
            graph(
                "Cgroup usage / limit (top 10)",
                "memtrace_cgroup_memory_usage_bytes over memtrace_cgroup_memory_limit_bytes for the "
                "cgroups with a limit: near 100 % reclaim turns into memcg OOM kills.",
                "percentunit",
                [
                    query(
                        f"topk(10, memtrace_cgroup_memory_usage_bytes{{{i}}} / memtrace_cgroup_memory_limit_bytes{{{i}}})",
                        "{{cgroup}}",
                    )
                ],
            )
        )
        .with_row(dash.Row("Faults and reclaim"))
        .with_panel(
            graph(
                "Page faults by workload (top 10)",
                "rate() of memtrace_process_page_faults_total per workload and type: major faults "
                "read from disk (100/s is thrashing), minor ones map a page already in memory.",
                "ops",
                [
                    query(
                        f"topk(10, sum by (workload, type) (rate(memtrace_process_page_faults_total{{{w}}}[$__rate_interval])))",
                        "{{workload}} {{type}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Node page faults",
                "rate() of /proc/vmstat pgfault − pgmajfault (minor) and pgmajfault (major).",
                "ops",
                [query(f"rate(memtrace_node_page_faults_total{{{i}}}[$__rate_interval])", "{{type}}")],
            )
        )
        .with_panel(
            graph(
                "Reclaim stall time by workload (top 10)",
                "rate() of memtrace_process_reclaim_stall_seconds_total: the share of wall time the "
                "workload's processes spent in direct or memcg reclaim (10 % is severe).",
                "percentunit",
                [
                    query(
                        f"topk(10, sum by (workload) (rate(memtrace_process_reclaim_stall_seconds_total{{{w}}}[$__rate_interval])))",
                        "{{workload}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Reclaim stalls and compaction (node)",
                "Per second: reclaim stalls of the selected workloads (memtrace_process_reclaim_stalls_total) "
                "and the node's direct reclaim stalls, compaction stalls and failures and working-set "
                "refaults (/proc/vmstat).",
                "ops",
                [
                    query(f"sum(rate(memtrace_process_reclaim_stalls_total{{{w}}}[$__rate_interval]))", "workload reclaim stalls"),
                    query(f"rate(memtrace_node_direct_reclaim_stalls_total{{{i}}}[$__rate_interval])", "direct reclaim stalls"),
                    query(f"rate(memtrace_node_compaction_stalls_total{{{i}}}[$__rate_interval])", "compaction stalls"),
                    query(f"rate(memtrace_node_compaction_failures_total{{{i}}}[$__rate_interval])", "compaction failures"),
                    query(f"rate(memtrace_node_workingset_refaults_total{{{i}}}[$__rate_interval])", "working-set refaults"),
                ],
            )
        )
        .with_row(dash.Row("Fragmentation and OOM kills"))
        .with_panel(
            graph(
                "Fragmentation index",
                "Unusable free space index from /proc/buddyinfo: the share of free memory in blocks too "
                "small for an order-3 (32 KiB) or order-9 (2 MiB, a huge page) allocation; 0 none, 1 all.",
                "percentunit",
                [query(f"memtrace_node_fragmentation_index{{{i}}}", "order {{order}}")],
                max_val=1,
            )
        )
        .with_panel(
            graph(
                "OOM kills",
                "OOM kills on the node per interval (/proc/vmstat oom_kill, every kill of the machine), "
                "and the victims memtrace counted per workload (memtrace_oom_kills_total, kept for "
                "--oom-retention; a workload's counter appears with its first kill). Each kill is also "
                "an annotation.",
                "short",
                [
                    query(f"increase(memtrace_node_oom_kills_total{{{i}}}[$__rate_interval])", "node kills"),
                    query(f"sum by (workload) (memtrace_oom_kills_total{{{w}}})", "{{workload}} (total)"),
                ],
            )
        )
        .with_row(dash.Row("memtrace itself"))
        .with_panel(
            graph(
                "Events and losses",
                "Kernel events decoded per second, and events lost per second by stage (kernel ring "
                "or map full, userspace queue full, undecodable): non-zero losses mean the per-event "
                "counts undercount.",
                "ops",
                [
                    query(f"rate(memtrace_events_received_total{{{i}}}[$__rate_interval])", "received"),
                    query(f"sum by (stage) (rate(memtrace_events_lost_total{{{i}}}[$__rate_interval]))", "lost {{stage}}"),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Probes",
                "memtrace_probes: hooks attached and failed. A failed probe family is a WARN in the "
                "log and /readyz is 503 (unless --allow-degraded).",
                "short",
                [query(f"memtrace_probes{{{i}}}", "{{state}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Model size",
                "Processes in the daemon's model and series in its last scrape (bounded: README, "
                "\"Bounded cardinality\").",
                "short",
                [
                    query(f"memtrace_tracked_processes{{{i}}}", "tracked processes"),
                    query(f"memtrace_exported_series{{{i}}}", "exported series"),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "HTTP connections",
                "Open connections to the daemon, and connections closed per second because "
                "--max-connections was reached.",
                "short",
                [
                    query(f"memtrace_http_connections{{{i}}}", "open"),
                    query(f"rate(memtrace_http_connections_rejected_total{{{i}}}[$__rate_interval])", "rejected/s"),
                ],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Scrape duration",
                "How long Prometheus took to scrape the daemon's /metrics (its own "
                "scrape_duration_seconds); no line at all means the target is not scraped.",
                "s",
                [query(f"scrape_duration_seconds{{{i}}}", "{{instance}}")],
                width=8,
            )
        )
        .with_panel(
            grid(
                "Version",
                "memtrace_node_info: the daemon's node name, hostname, kernel and memtrace version.",
                "none",
                [query(f"memtrace_node_info{{{i}}}", instant=True)],
                width=8,
            )
        )
    )
    return d


# ------------------------------------------------------------------------------------------------
# Cluster


def cluster_dashboard() -> dash.Dashboard:
    n = 'node=~"$node"'
    w = f"{n}, {WORKLOAD_FILTER}"
    wl = WORKLOAD_FILTER
    d = (
        base(
            "memtrace / Cluster",
            "memtrace-cluster",
            "Workloads across nodes: skew between replicas, leak growth, OOM storms, app-or-node "
            "verdicts. From the recording rules and alerts of deploy/prometheus/memtrace-rules.yml "
            "(load them into the Prometheus or ruler that sees every node) and from `memtrace "
            "cluster serve`'s metrics (scrape it too).",
        )
        .with_variable(datasource_variable())
        .with_variable(
            label_variable(
                "node", "Node", "Nodes (`memtrace daemon --node-name`, memtrace_node_info).",
                "memtrace_node_info", "node",
            )
        )
        .with_variable(namespace_variable("memtrace:instance_rss_bytes"))
        .with_variable(
            workload_variable(f'memtrace:instance_rss_bytes{{{n}, workload=~"${{namespace}}(/.*)?"}}')
        )
        .annotation(oom_annotation(wl))
    )
    d = (
        d.with_row(dash.Row("Diagnostics"))
        .with_panel(
            grid(
                "Firing diagnostics",
                "memtrace's alerts (ALERTS{alertname=~\"Memtrace.*\"}) pending or firing now, with "
                "their diagnostic (hot_shard, leak, oom_storm, noisy_neighbour, app_or_node), workload "
                "and node.",
                "none",
                [query(f'ALERTS{{alertname=~"Memtrace.*", {wl}}}', instant=True)],
                width=12,
                value_name="active",
            )
        )
        .with_panel(
            grid(
                "Findings of `memtrace cluster serve`",
                "memtrace_cluster_finding_info{kind, workload}: one row per finding of the relay's "
                "last round (its five diagnostics over the daemons' /api/v1/workloads, with their "
                "history). `memtrace cluster diagnose` prints the evidence.",
                "none",
                [query(f'memtrace_cluster_finding_info{{{wl}}}', instant=True)],
                width=12,
                hidden=("Time", "__name__", "job", "instance", "Value"),
                value_name="finding",
            )
        )
        .with_panel(
            graph(
                "Relay: findings by kind",
                "memtrace_cluster_findings: findings of each kind in every round of `memtrace cluster serve`.",
                "short",
                [query("memtrace_cluster_findings", "{{kind}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Relay: nodes answering",
                "memtrace_cluster_nodes: targets that answered the relay's last round, and those that "
                "failed (timed out, refused, garbage: `memtrace cluster nodes` says why).",
                "short",
                [query("memtrace_cluster_nodes", "{{state}}")],
                width=8,
            )
        )
        .with_panel(
            graph(
                "Relay: round duration and age",
                "How long the last fan-out round took (memtrace_cluster_round_duration_seconds) and how "
                "old it is (time() − memtrace_cluster_round_timestamp_seconds): an age well above "
                "--interval means the relay is stuck.",
                "s",
                [
                    query("memtrace_cluster_round_duration_seconds", "round duration"),
                    query("time() - memtrace_cluster_round_timestamp_seconds", "age of the last round"),
                ],
                width=8,
            )
        )
        .with_row(dash.Row("Skew between replicas (hot shard)"))
        .with_panel(
            graph(
                "Anon RSS per instance",
                "memtrace:instance_rss_anon_bytes: anon RSS of each instance (scrape target and "
                "cgroup) of the selected workloads, with its node.",
                "bytes",
                [query(f"memtrace:instance_rss_anon_bytes{{{w}}}", "{{workload}} {{node}} {{cgroup}}")],
            )
        )
        .with_panel(
            graph(
                "Skew: largest instance / median",
                "Per workload, the largest instance's anon RSS over the median of its instances "
                "(memtrace:workload_rss_anon_bytes:median). MemtraceHotShard fires at ≥ 1.5× and ≥ 64 MiB "
                "with ≥ 3 instances on ≥ 2 nodes.",
                "suffix:×",
                [
                    query(
                        f"max by (workload) (memtrace:instance_rss_anon_bytes{{{w}}}) "
                        f"/ on (workload) clamp_min(memtrace:workload_rss_anon_bytes:median{{{wl}}}, 1)",
                        "{{workload}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Instances and nodes per workload",
                "memtrace:workload_instances and memtrace:workload_nodes: how widely each workload runs.",
                "short",
                [
                    query(f"memtrace:workload_instances{{{wl}}}", "{{workload}} instances"),
                    query(f"memtrace:workload_nodes{{{wl}}}", "{{workload}} nodes"),
                ],
            )
        )
        .with_panel(
            graph(
                "Median anon RSS per workload",
                "memtrace:workload_rss_anon_bytes:median: the median over each workload's instances, the "
                "hot-shard rule's reference.",
                "bytes",
                [query(f"memtrace:workload_rss_anon_bytes:median{{{wl}}}", "{{workload}}")],
            )
        )
        .with_row(dash.Row("Leaks"))
        .with_panel(
            graph(
                "RSS growth per hour (least squares over the window)",
                "memtrace:instance_rss_growth_bytes_per_hour:1h: the deriv() of each instance's RSS "
                "(anon + file + shmem) over the last hour, per hour.",
                "bytes",
                [query(f"memtrace:instance_rss_growth_bytes_per_hour:1h{{{w}}}", "{{workload}} {{node}} {{cgroup}}")],
                min_val=None,
            )
        )
        .with_panel(
            graph(
                "Relative growth per hour",
                "memtrace:instance_rss_growth_ratio_per_hour:1h: growth per hour over the fitted RSS at the "
                "window's start. A leak needs ≥ 10 %/h and ≥ max(50 MiB, 5 % of the cgroup limit)/h, steadily.",
                "percentunit",
                [query(f"memtrace:instance_rss_growth_ratio_per_hour:1h{{{w}}}", "{{workload}} {{node}} {{cgroup}}")],
                min_val=None,
            )
        )
        .with_panel(
            graph(
                "Leaking instances",
                "memtrace:instance_leaking_bytes_per_hour:1h: the instances that leak by the rule, and "
                "their growth per hour. Empty while nothing leaks, and until an instance has history "
                "over at least half the window (30 min).",
                "bytes",
                [query(f"memtrace:instance_leaking_bytes_per_hour:1h{{{w}}}", "{{workload}} {{node}} {{cgroup}}")],
            )
        )
        .with_panel(
            graph(
                "Share of a workload's instances leaking",
                "memtrace:workload_leaking_share:1h: ≥ 80 % is a code regression in every replica "
                "(MemtraceLeakAllInstances), less a few named instances (MemtraceLeak). Empty while "
                "nothing leaks.",
                "percentunit",
                [query(f"memtrace:workload_leaking_share:1h{{{wl}}}", "{{workload}}")],
                max_val=1,
            )
        )
        .with_row(dash.Row("OOM storms and noisy neighbours"))
        .with_panel(
            graph(
                "OOM kills per node in the storm window (5 min)",
                "memtrace:node_workload_oom_kills:5m: kills of each workload on each node in the last 5 "
                "minutes. Kills of one workload on ≥ 2 nodes are a storm (MemtraceOomStorm).",
                "short",
                [query(f"memtrace:node_workload_oom_kills:5m{{{w}}}", "{{workload}} {{node}}")],
            )
        )
        .with_panel(
            graph(
                "Nodes with OOM kills per workload (5 min)",
                "How many nodes killed each workload in the last 5 minutes: 2 or more is an OOM storm.",
                "short",
                [query(f"count by (workload) (memtrace:node_workload_oom_kills:5m{{{w}}} > 0)", "{{workload}}")],
            )
        )
        .with_panel(
            graph(
                "Anon RSS growth per workload and node (window)",
                "memtrace:node_workload_rss_anon_growth_bytes:1h: anon RSS growth over the last hour; the "
                "largest on a node (≥ 32 MiB) while another workload stalls is the noisy neighbour.",
                "bytes",
                [query(f"memtrace:node_workload_rss_anon_growth_bytes:1h{{{w}}}", "{{workload}} {{node}}")],
                min_val=None,
            )
        )
        .with_panel(
            graph(
                "Reclaim stall per workload and node (window mean)",
                "memtrace:node_workload_reclaim_stall_seconds_per_second:1h: mean seconds stalled in reclaim "
                "per second over the last hour; ≥ 0.05 next to a growing workload names a noisy neighbour.",
                "percentunit",
                [query(f"memtrace:node_workload_reclaim_stall_seconds_per_second:1h{{{w}}}", "{{workload}} {{node}}")],
            )
        )
        .with_panel(
            graph(
                "Noisy neighbour culprits",
                "memtrace:noisy_neighbour_culprit:1h: per node, the workload that grew most (≥ 32 MiB over "
                "the window) while another stalled in reclaim ≥ 0.05 s/s. Empty while no node has one.",
                "bytes",
                [query(f"memtrace:noisy_neighbour_culprit:1h{{{w}}}", "{{workload}} {{node}}")],
                width=24,
            )
        )
        .with_row(dash.Row("App or node"))
        .with_panel(
            graph(
                "Highest pressure score per workload and node",
                "memtrace:node_workload_pressure_score: the highest pressure score of each workload's "
                "processes on each node. ≥ 40 on every node of a workload: the app (MemtracePressureApp); "
                "on one node where others are too: the node (MemtracePressureNode).",
                "none",
                [query(f"memtrace:node_workload_pressure_score{{{w}}}", "{{workload}} {{node}}")],
                max_val=100,
            )
        )
        .with_panel(
            graph(
                "Share of a workload's nodes under pressure (score ≥ 40)",
                "1 (all its nodes): the application itself; a small share with other workloads under "
                "pressure on the same node: the node. 0 when no node is.",
                "percentunit",
                [
                    query(
                        f"(count by (workload) (memtrace:node_workload_pressure_score{{{w}}} >= 40)"
                        f" or count by (workload) (memtrace:node_workload_pressure_score{{{w}}}) * 0)"
                        f" / count by (workload) (memtrace:node_workload_pressure_score{{{w}}})",
                        "{{workload}}",
                    )
                ],
                max_val=1,
            )
        )
    )
    return d


# ------------------------------------------------------------------------------------------------
# OOM


def oom_dashboard() -> dash.Dashboard:
    n = 'node=~"$node"'
    wl = WORKLOAD_FILTER
    on_node = f"* on (instance) group_left (node) memtrace_node_info{{{n}}}"
    d = (
        base(
            "memtrace / OOM kills",
            "memtrace-oom",
            "OOM kills across the fleet: when, which victim workload and cgroup on which node, "
            "storms, and how close cgroups and nodes are to the next kill.",
        )
        .with_variable(datasource_variable())
        .with_variable(
            label_variable(
                "node", "Node", "Nodes (`memtrace daemon --node-name`, memtrace_node_info).",
                "memtrace_node_info", "node",
            )
        )
        .with_variable(namespace_variable("memtrace_oom_kills_total"))
        .with_variable(workload_variable('memtrace_oom_kills_total{workload=~"${namespace}(/.*)?"}'))
        .annotation(oom_annotation(wl))
    )
    new_kills = (
        f"(increase(memtrace_oom_kills_total{{{wl}}}[$__rate_interval]) and memtrace_oom_kills_total offset $__rate_interval)"
        f" or (memtrace_oom_kills_total{{{wl}}} unless memtrace_oom_kills_total offset $__rate_interval)"
    )
    d = (
        d.with_row(dash.Row("Kills"))
        .with_panel(
            single(
                "Victims within retention",
                "Sum of memtrace_oom_kills_total on the selected nodes: the victims of the daemons' "
                "--oom-retention (1 h by default), which survives daemon restarts.",
                "short",
                query(f"sum(memtrace_oom_kills_total{{{wl}}} {on_node})"),
            )
        )
        .with_panel(
            single(
                "Kills in the last 5 minutes",
                "Kills in the storm window on the selected nodes, from the recording rule "
                "memtrace:node_workload_oom_kills:5m.",
                "short",
                query(f"sum(memtrace:node_workload_oom_kills:5m{{{n}, {wl}}}) or vector(0)"),
            )
        )
        .with_panel(
            single(
                "Workloads in an OOM storm",
                "Workloads killed on ≥ 2 nodes within 5 minutes (the MemtraceOomStorm rule).",
                "short",
                query(
                    "count(count by (workload) (memtrace:node_workload_oom_kills:5m{%s} > 0) >= 2) or vector(0)" % wl
                ),
            )
        )
        .with_panel(
            single(
                "Nodes killing (all of the machine)",
                "Nodes whose kernel OOM-killed anything in the last 5 minutes (/proc/vmstat oom_kill, "
                "whatever the cgroup).",
                "short",
                query(f"count(increase(memtrace_node_oom_kills_total[5m]) {on_node} > 0) or vector(0)"),
            )
        )
        .with_panel(
            graph(
                "Kills over time by victim",
                "New kills per interval of each victim workload (comm) and cgroup, per node; a "
                "workload's counter appears with its first kill, counted whole.",
                "short",
                [query(f"sum by (node, workload, comm, cgroup) (({new_kills}) {on_node})", "{{node}} {{comm}} {{cgroup}}")],
                width=16,
            )
        )
        .with_panel(
            graph(
                "Kills over time by node (kernel)",
                "increase() of /proc/vmstat oom_kill per node: every kill of the machine, in or out of "
                "memtrace's --cgroup-root.",
                "short",
                [query(f"increase(memtrace_node_oom_kills_total[$__rate_interval]) {on_node}", "{{node}}")],
                width=8,
            )
        )
        .with_panel(
            grid(
                "Victims (within retention)",
                "One row per victim workload, comm and cgroup on each node, with its kills within the "
                "daemons' --oom-retention. The trigger (the task whose allocation failed), the victim's "
                "pid and the flight recording of its last seconds are not metrics (no pid labels, by "
                "design): `memtrace oom` on the node, `memtrace cluster oom` across nodes, or "
                "/api/v1/oom show them.",
                "short",
                [query(f"sum by (node, workload, comm, cgroup, pod_uid, container_id) (memtrace_oom_kills_total{{{wl}}} {on_node})", instant=True)],
                value_name="kills",
            )
        )
        .with_row(dash.Row("Storms"))
        .with_panel(
            graph(
                "Kills per workload and node in the storm window",
                "memtrace:node_workload_oom_kills:5m: kills of each workload on each node in the last "
                "5 minutes (the storm rule's input).",
                "short",
                [query(f"memtrace:node_workload_oom_kills:5m{{{n}, {wl}}}", "{{workload}} {{node}}")],
            )
        )
        .with_panel(
            grid(
                "OOM storms",
                "Storms as the alert (MemtraceOomStorm: one row per node of the storm) and as `memtrace "
                "cluster serve` found them (memtrace_cluster_finding_info{kind=\"oom_storm\"}, which "
                "also splits kills by scope: memcg or global).",
                "none",
                [
                    query(f'ALERTS{{alertname="MemtraceOomStorm", {wl}}}', instant=True),
                    query(f'memtrace_cluster_finding_info{{kind="oom_storm", {wl}}}', instant=True),
                ],
                width=12,
                value_name="active",
            )
        )
        .with_row(dash.Row("Headroom"))
        .with_panel(
            graph(
                "Cgroups nearest their limit (top 10)",
                "memtrace_cgroup_memory_usage_bytes / memtrace_cgroup_memory_limit_bytes: a cgroup at "
                "100 % reclaims, then its processes are OOM-killed (memcg scope).",
                "percentunit",
                [
                    query(
                        f"topk(10, (memtrace_cgroup_memory_usage_bytes / memtrace_cgroup_memory_limit_bytes) {on_node})",
                        "{{node}} {{cgroup}}",
                    )
                ],
            )
        )
        .with_panel(
            graph(
                "Node memory available",
                "MemAvailable / MemTotal per node: near 0 the kernel OOM-kills across the machine "
                "(global scope).",
                "percentunit",
                [
                    query(
                        f"(memtrace_node_memory_available_bytes / memtrace_node_memory_total_bytes) {on_node}",
                        "{{node}}",
                    )
                ],
                max_val=1,
            )
        )
    )
    return d


DASHBOARDS = {
    "memtrace-node.json": node_dashboard,
    "memtrace-cluster.json": cluster_dashboard,
    "memtrace-oom.json": oom_dashboard,
}


def render(build) -> str:
    return JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False).encode(build().build()) + "\n"


def model_differences(text: str) -> list[str]:
    """Decode `text` through the SDK's dashboard model and encode it again: every key the model
    does not know (a typo, a field of another Grafana version) is dropped on the way, so the two
    differ. Only the annotation keys the Prometheus datasource reads are allowed beyond the model."""
    original = json.loads(text)
    for annotation in original.get("annotations", {}).get("list", []):
        for key in ANNOTATION_EXTENSION_KEYS:
            annotation.pop(key, None)
    decoded = model.Dashboard.from_json(json.loads(text))
    again = json.loads(JSONEncoder(sort_keys=True).encode(decoded))
    a = json.dumps(original, sort_keys=True, indent=1).splitlines()
    b = json.dumps(again, sort_keys=True, indent=1).splitlines()
    return list(difflib.unified_diff(a, b, "committed", "through the model", lineterm="", n=2))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    register_default_plugins()
    OUT.mkdir(exist_ok=True)
    failures = 0
    for name, build in DASHBOARDS.items():
        path = OUT / name
        text = render(build)
        if args.check:
            committed = path.read_text() if path.exists() else ""
            if committed != text:
                failures += 1
                print(f"{path}: differs from generate.py's output; run `cargo xtask grafana`:")
                sys.stdout.writelines(
                    difflib.unified_diff(committed.splitlines(True), text.splitlines(True), "committed", "generated", n=2)
                )
                continue
        else:
            path.write_text(text)
        differences = model_differences(text)
        if differences:
            failures += 1
            print(f"{path}: does not round-trip through Grafana's dashboard model:")
            print("\n".join(differences))
        else:
            print(f"{path}: {'up to date' if args.check else 'written'}, round-trips through the model")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
