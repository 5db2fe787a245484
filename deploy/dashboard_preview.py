"""Run the Grafana dashboard's queries against a Prometheus and draw what each panel shows.

    python -m deploy.dashboard_preview --prometheus http://127.0.0.1:9090 --minutes 15 \
        --out docs/screenshots/dashboard.png

Grafana is not needed: every panel's PromQL (`deploy/grafana/dashboards/*.json`) is sent to
Prometheus' HTTP API (`/api/v1/query_range`) with Grafana's `$__rate_interval` filled in, and the
series come back drawn on the dashboard's own grid (time series as lines, stats and bar gauges as
their latest values). It is a preview of the data, not Grafana's rendering. `collect` is also
what the tests use to check that every panel has data from a live API.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DASHBOARD = Path(__file__).parent / "grafana" / "dashboards" / "mnist-mlops.json"
GRID_COLUMNS = 24  # Grafana's grid: 24 columns, rows of about 30 px


@dataclass(frozen=True)
class Series:
    legend: str
    times: list[float]  # unix seconds
    values: list[float]


@dataclass(frozen=True)
class PanelData:
    title: str
    kind: str  # "timeseries", "stat", "bargauge", …
    grid: dict  # Grafana's gridPos: x, y, w, h
    series: list[Series]
    empty_queries: list[str]  # queries that returned no series


def legend(template: str, labels: dict[str, str]) -> str:
    """Grafana's `legendFormat`: `{{name}}` replaced by the series' label."""
    text = template or ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
    for key, value in labels.items():
        text = text.replace("{{" + key + "}}", value)
    return text or "value"


def query_range(
    client: httpx.Client, expr: str, start: float, end: float, step: float
) -> list[tuple[dict[str, str], list[float], list[float]]]:
    """One PromQL expression over a time range: (labels, times, values) per series."""
    answer = client.get(
        "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step}
    )
    body = answer.json()
    if answer.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"Prometheus refused {expr!r}: {body.get('error', answer.text)}")
    return [
        (
            result["metric"],
            [float(moment) for moment, _ in result["values"]],
            [float(value) for _, value in result["values"]],
        )
        for result in body["data"]["result"]
    ]


def collect(
    prometheus: str,
    dashboard: dict,
    start: float,
    end: float,
    step: float,
    rate_interval: str,
) -> list[PanelData]:
    """Every panel's queries (rows skipped), run over [start, end]."""
    panels = []
    with httpx.Client(base_url=prometheus, timeout=30) as client:
        for panel in dashboard["panels"]:
            if panel["type"] == "row":
                continue
            series, empty = [], []
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", rate_interval)
                found = query_range(client, expr, start, end, step)
                if not found:
                    empty.append(target["expr"])
                series += [
                    Series(legend(target.get("legendFormat", ""), labels), times, values)
                    for labels, times, values in found
                ]
            panels.append(PanelData(panel["title"], panel["type"], panel["gridPos"], series, empty))
    return panels


def draw_panel(axes: Axes, panel: PanelData, start: float) -> None:
    axes.set_title(panel.title, fontsize=10, loc="left")
    axes.tick_params(labelsize=7)
    if not panel.series:
        axes.text(0.5, 0.5, "No data", ha="center", va="center", transform=axes.transAxes)
        axes.set_axis_off()
    elif panel.kind == "timeseries":
        for one in panel.series:
            axes.plot([(moment - start) / 60 for moment in one.times], one.values, label=one.legend)
        axes.set_xlabel("minutes", fontsize=7)
        axes.legend(fontsize=6, loc="upper left", ncols=2)
    else:  # stat and bar gauge: the latest value of each series
        names = [one.legend for one in panel.series]
        latest = [one.values[-1] for one in panel.series]
        if panel.kind == "bargauge":  # names written on the bars, as Grafana does
            bars = axes.barh(range(len(names)), latest, color="tab:green")
            axes.bar_label(bars, labels=names, label_type="center", fontsize=7)
            axes.set_yticks([])
        else:
            text = "\n".join(
                f"{name}: {value:g}" for name, value in zip(names, latest, strict=True)
            )
            axes.text(0.5, 0.5, text, ha="center", va="center", fontsize=10,
                      transform=axes.transAxes)  # fmt: skip
            axes.set_axis_off()


def render(dashboard: dict, panels: list[PanelData], start: float, out: Path) -> None:
    """The panels on the dashboard's grid (24 columns; a grid unit about 30 px high), with the
    dashboard's title and row titles, as one PNG."""
    rows = [panel for panel in dashboard["panels"] if panel["type"] == "row"]
    units = max(panel.grid["y"] + panel.grid["h"] for panel in panels)
    unit_inches = 0.36
    figure = Figure(figsize=(20, (units + 2) * unit_inches))  # no pyplot: no global backend
    height = units + 2  # a grid unit above for the title, one below for the last axis labels

    def box(x: float, y: float, w: float, h: float) -> list[float]:
        """Figure coordinates of a grid box, padded for the title and the tick labels."""
        pad_x, pad_top, pad_bottom = 0.9, 0.9, 1.2
        return [
            (x + pad_x) / GRID_COLUMNS,
            1 - (y + 1 + h - pad_bottom) / height,
            (w - 1.3 * pad_x) / GRID_COLUMNS,
            (h - pad_top - pad_bottom) / height,
        ]

    for panel in panels:
        x, y, w, h = (panel.grid[key] for key in ("x", "y", "w", "h"))
        draw_panel(figure.add_axes(box(x, y, w, h)), panel, start)
    for row in rows:
        figure.text(0.005, 1 - (row["gridPos"]["y"] + 1.6) / height, row["title"], fontsize=12,
                    weight="bold")  # fmt: skip
    figure.suptitle(
        f"{dashboard['title']}: the dashboard's queries, drawn from Prometheus", fontsize=13
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    parser.add_argument("--dashboard", type=Path, default=DASHBOARD)
    parser.add_argument("--minutes", type=float, default=15, help="the time range, to now")
    parser.add_argument("--rate-interval", default="1m", help="Grafana's $__rate_interval")
    parser.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = parser.parse_args()
    dashboard = json.loads(args.dashboard.read_text())
    end = time.time()
    start = end - args.minutes * 60
    step = max(1.0, args.minutes * 60 / 300)
    panels = collect(args.prometheus, dashboard, start, end, step, args.rate_interval)
    render(dashboard, panels, start, args.out)
    for panel in panels:
        for expr in panel.empty_queries:
            print(f"no data: {panel.title}: {expr}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
