"""Dashboards and alerts as code: the Prometheus config and alert rules pass `promtool` (Debian's
`prometheus` package; `.ci/run` installs it), the Grafana dashboard is well formed and names the
provisioned datasource, every metric a panel or an alert queries is one the live app's
`/metrics` exposes, and every panel's queries, run by a real Prometheus scraping the live app,
return data."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from bench.loadgen import free_port, running
from deploy.dashboard_preview import collect, render
from monitoring.store import open_store
from pipeline.drift.statistics import SCORE_NAMES
from tests.conftest import PROJECT_ROOT, SEED_IMAGES

DEPLOY = PROJECT_ROOT / "deploy"
GRAFANA = DEPLOY / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA / "provisioning" / "datasources"
METRIC = re.compile(r"\bmnist_\w+")
# Suffixes Prometheus' text format adds to a family's name, by type.
SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def prometheus_tool(name: str) -> str:
    """`promtool` or `prometheus`, from Debian's `prometheus` package."""
    executable = shutil.which(name)
    if executable is None:
        if os.environ.get("CI"):  # CI installs it: there, a skip would hide a broken rule
            pytest.fail(f"{name} is missing: apt-get install prometheus")
        pytest.skip(f"{name} is missing (apt-get install prometheus)")
    return executable


def promtool(*args: str) -> str:
    executable = prometheus_tool("promtool")
    result = subprocess.run(
        [executable, *args], cwd=DEPLOY, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_promtool_accepts_the_config_and_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")  # with its rule files
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_alerts_fire_after_their_for_and_only_on_what_should_page() -> None:
    promtool("test", "rules", "alerts.test.yml")


def alert_rules() -> list[dict]:
    groups = yaml.safe_load((DEPLOY / "alerts.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_every_alert_is_debounced_rated_and_says_what_to_do() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} >= {
        "ServedVersionDiffersFromAlias", "HighErrorRate", "InputDrift", "FeedbackAccuracyFalling",
    }  # fmt: skip
    for rule in rules:
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert {"summary", "action"} <= set(rule["annotations"]), rule["alert"]


def provisioned_datasource() -> dict:
    (source,) = yaml.safe_load((DATASOURCES / "prometheus.yml").read_text())["datasources"]
    return source


def panels(dashboard: dict) -> list[dict]:
    """Every panel, those inside collapsed rows too; rows themselves left out."""
    found = []
    for panel in dashboard["panels"]:
        found += [panel] if panel["type"] != "row" else panel.get("panels", [])
    return found


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda path: path.name)
def test_dashboard_is_well_formed_and_uses_the_provisioned_datasource(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    uid = provisioned_datasource()["uid"]
    occupied: set[tuple[int, int]] = set()
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        cells = {(box["x"] + dx, box["y"] + dy) for dx in range(box["w"]) for dy in range(box["h"])}
        assert box["x"] + box["w"] <= 24 and not cells & occupied, f"{panel['title']} overlaps"
        occupied |= cells
    for panel in panels(dashboard):
        assert panel["datasource"] == {"type": "prometheus", "uid": uid}, panel["title"]
        assert panel["targets"], f"{panel['title']} queries nothing"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == uid and METRIC.search(target["expr"])
        refs = [target["refId"] for target in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_shows_what_the_issue_asks_for() -> None:
    (dashboard,) = (json.loads(path.read_text()) for path in DASHBOARDS)
    queries = " ".join(t["expr"] for panel in panels(dashboard) for t in panel["targets"])
    for metric in (
        "mnist_http_requests_total", "mnist_http_request_duration_seconds_bucket",
        "mnist_inference_batch_size_bucket", "mnist_version_predictions_total",
        "mnist_prediction_confidence_bucket", "mnist_uncertain_predictions_total",
        "mnist_feedback_accuracy", "mnist_drift_score", "mnist_model_version",
        "mnist_shadow_comparisons_total", "mnist_shadow_uncertain_total",
    ):  # fmt: skip
        assert metric in queries, metric


def exposed_names(text: str) -> set[str]:
    """Every sample name `/metrics` can carry: each family's, with its type's suffixes (a
    labelled family without children yet still counts: it is declared)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SAMPLE_SUFFIXES.get(family.type, ("",))}
        names |= {sample.name for sample in family.samples}
    return names


def queried_names() -> dict[str, set[str]]:
    """Metric names, by where they are queried: each dashboard and the alert rules."""
    where: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        exprs = [t["expr"] for panel in panels(dashboard) for t in panel["targets"]]
        where[path.name] = set(METRIC.findall(" ".join(exprs)))
    where["alerts.yml"] = set(METRIC.findall(" ".join(rule["expr"] for rule in alert_rules())))
    return where


def send_feedback(
    client: httpx.Client, prediction_id: str, label: str = "7", timeout: float = 30
) -> None:
    """Confirm an answer; the log writer runs off the request path, so the prediction may not
    be stored yet (404) for a moment."""
    deadline = time.monotonic() + timeout
    body = {"prediction_id": prediction_id, "label": label}
    while (response := client.post("/feedback", json=body)).status_code == 404:
        assert time.monotonic() < deadline, f"prediction {prediction_id} was never logged"
        time.sleep(0.05)
    assert response.status_code == 201, response.text


def test_every_queried_metric_exists_in_the_live_metrics(
    live_server_url: str, private_prediction_store: str
) -> None:
    # Traffic, feedback and a drift check, so that the store's gauges have something to say.
    with httpx.Client(base_url=live_server_url, timeout=30) as client:
        seven = (SEED_IMAGES / "num_7.png").read_bytes()
        answer = client.post("/predict", files={"file": ("7.png", seven, "image/png")})
        assert answer.status_code == 200, answer.text
        send_feedback(client, answer.json()["prediction_id"])
        store = open_store(private_prediction_store)  # the app has created its tables by now
        try:
            store.record_drift(500, "test", dict.fromkeys(SCORE_NAMES.values(), 0.1), [])
        finally:
            store.close()
        exposed = exposed_names(client.get("/metrics").text)
    missing = {where: sorted(names - exposed) for where, names in queried_names().items()}
    missing = {where: names for where, names in missing.items() if names}
    assert not missing, f"queried but not in /metrics: {missing}"


@contextlib.contextmanager
def prometheus_scraping(target: str, scratch: Path) -> Iterator[str]:
    """A Prometheus on loopback that scrapes `target` (host:port) every second and loads the
    alert rules; stopped on leaving."""
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "mnist-api", "static_configs": [{"targets": [target]}]}],
        "rule_files": [str(DEPLOY / "alerts.yml")],
    }
    (scratch / "prometheus.yml").write_text(yaml.safe_dump(config))
    command = [
        prometheus_tool("prometheus"),
        f"--config.file={scratch / 'prometheus.yml'}",
        f"--storage.tsdb.path={scratch / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with running(command, "/-/ready", port, {}, timeout=60) as server:
        yield server.url


def traffic(client: httpx.Client, seconds: float) -> None:
    """What the panels need to have something to show, spread over `seconds`: uploads of the
    seed digits, pictures sent as grey levels, a wrong file (415), and on some answers feedback
    that gives the digit really drawn."""
    digits = (1, 5, 7)
    pictures = [(SEED_IMAGES / f"num_{digit}.png").read_bytes() for digit in digits]
    strokes = np.zeros((28, 28), np.uint8)
    strokes[4:24, 12:16] = 255  # a plain "1"
    deadline = time.monotonic() + seconds
    sent = 0
    while time.monotonic() < deadline:
        picture = pictures[sent % len(pictures)]
        answer = client.post("/predict", files={"file": ("digit.png", picture, "image/png")})
        assert answer.status_code == 200, answer.text
        if sent % 4 == 0:
            send_feedback(client, answer.json()["prediction_id"], str(digits[sent % 3]))
        pixels = client.post("/predict/pixels", json={"pixels": strokes.tolist()})
        assert pixels.status_code == 200, pixels.text
        if sent % 5 == 0:
            wrong = client.post(
                "/predict", files={"file": ("x.png", b"not a picture", "image/png")}
            )
            assert wrong.status_code == 415, wrong.text
        sent += 1
        time.sleep(0.1)


@pytest.mark.slow
def test_every_panel_shows_data_from_a_real_prometheus(
    live_server_url: str, private_prediction_store: str, tmp_path: Path
) -> None:
    """Each panel's PromQL, `$__rate_interval` filled in as Grafana would for a 1 s scrape, run
    by Prometheus over live traffic: none may come back empty (a query can be valid and name
    existing metrics, yet select nothing). The panels are drawn too (SCREENSHOT_DIR keeps the
    picture: the README's is taken against the real model with LIVE_SERVER_TRACKING_URI)."""
    (dashboard,) = (json.loads(path.read_text()) for path in DASHBOARDS)
    store = open_store(private_prediction_store)
    try:
        alarm = SCORE_NAMES["ink_share"]
        store.record_drift(500, "test", dict.fromkeys(SCORE_NAMES.values(), 0.1), [alarm])
    finally:
        store.close()
    with prometheus_scraping(live_server_url.removeprefix("http://"), tmp_path) as prometheus:
        start = time.time()
        with httpx.Client(base_url=live_server_url, timeout=30) as client:
            traffic(client, seconds=8)
        time.sleep(4)  # the last scrapes and rates
        shown = collect(prometheus, dashboard, start, time.time(), step=1, rate_interval="4s")
    empty = {panel.title: panel.empty_queries for panel in shown if panel.empty_queries}
    assert not empty, f"queries without data: {empty}"
    assert {panel.title for panel in shown} == {p["title"] for p in panels(dashboard)}
    (alarms,) = (panel for panel in shown if panel.title == "Drift alarms")
    assert {one.legend: one.values[-1] for one in alarms.series}[alarm] == 1
    out = Path(os.environ.get("SCREENSHOT_DIR", tmp_path)) / "dashboard.png"
    render(dashboard, shown, start, out)
    assert out.stat().st_size > 0
