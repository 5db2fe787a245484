"""The drift check's HTML report: one self-contained page, its plots embedded as PNG."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from mnist_core.labels import NUM_CLASSES
from pipeline.drift.statistics import INPUT_STATISTICS, Window, input_statistics
from pipeline.io import atomic_file

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 68rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.3rem 0.8rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.alarm { color: #b00020; font-weight: 600; } td.ok { color: #1b7f3b; }
img { max-width: 100%; }
"""


def png(figure: Figure) -> str:
    """An <img> holding the figure as an embedded PNG."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return f'<img alt="" src="data:image/png;base64,{encoded}">'


def outputs_figure(reference: Window, window: Window) -> Figure:
    """The model's side: predicted-class shares, and the top-class confidence's distribution."""
    figure = Figure(figsize=(11, 3.6), layout="constrained")
    mix, confidence = figure.subplots(1, 2)
    digits = np.arange(NUM_CLASSES)
    for offset, name, sample in ((-0.2, "reference", reference), (0.2, "window", window)):
        predicted = sample.probabilities.argmax(axis=1)
        shares = np.bincount(predicted, minlength=NUM_CLASSES) / len(predicted)
        mix.bar(digits + offset, shares, width=0.4, label=name)
        confidence.ecdf(sample.probabilities.max(axis=1), label=name)
    mix.set(xlabel="predicted digit", ylabel="share", title="Predicted-class mix", xticks=digits)
    confidence.set(xlabel="top-class probability", ylabel="cumulative share")
    confidence.set_xscale("logit", nonpositive="clip")  # the interesting part is near 1
    confidence.set_title("Confidence (cumulative)")
    for axes in (mix, confidence):
        axes.legend()
        axes.grid(alpha=0.3)
    return figure


def inputs_figure(reference: Window, window: Window) -> Figure:
    """The inputs' side: the cumulative distribution of each input statistic."""
    figure = Figure(figsize=(13, 2.8), layout="constrained")
    panels = figure.subplots(1, len(INPUT_STATISTICS))
    before, after = input_statistics(reference.pixels), input_statistics(window.pixels)
    for axes, name in zip(panels, INPUT_STATISTICS, strict=True):
        for label, values in (("reference", before[name]), ("window", after[name])):
            axes.ecdf(values[~np.isnan(values)], label=label)
        axes.set(title=name.replace("_", " "), xlabel="pixels" if "box" in name else "share")
        axes.grid(alpha=0.3)
    panels[0].legend()
    return figure


def gallery_figure(window: Window, count: int = 32) -> Figure:
    """The newest inputs of the window, as the model saw them."""
    pixels = window.pixels[-count:]
    figure = Figure(figsize=(13, 1.9), layout="constrained")
    for axes, image in zip(figure.subplots(2, count // 2).flat, pixels, strict=False):
        axes.imshow(image, cmap="gray", vmin=0, vmax=255)
    for axes in figure.axes:
        axes.set_axis_off()
    return figure


def tests_table(summary: dict) -> str:
    rows = []
    rates = summary.get("false_alarms", {}).get("rate", {})
    for name, test in summary["tests"].items():
        verdict = "alarm" if test["alarm"] else "ok"
        rate = f"{rates[name]:.3f}" if name in rates else "not measured"
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{html.escape(test['score'])}</td>"
            f"<td>{test['value']:.4f}</td><td>{test['p_value']:.2e}</td>"
            f"<td class={verdict}>{verdict}</td><td>{rate}</td></tr>"
        )
    header = (
        "<tr><th>test</th><th>score</th><th>value</th><th>p-value</th><th>verdict</th>"
        "<th>false alarms (unshifted)</th></tr>"
    )
    return f"<table>{header}{''.join(rows)}</table>"


def verdict_paragraph(summary: dict) -> str:
    span = summary["window"]
    text = (
        f"<p>The newest {summary['window_size']} logged predictions ({html.escape(span['first'])}"
        f" to {html.escape(span['last'])} UTC, model versions "
        f"{html.escape(', '.join(span['model_versions']))}) against "
        f"{html.escape(summary['reference'])} ({summary['reference_size']} images). "
        f"A test fires when its p-value is below {summary['per_test_threshold']:.4f}: the "
        f"family-wise false-alarm rate {summary['alpha']} split over {len(summary['tests'])} "
        "tests (Bonferroni).</p>"
    )
    if "false_alarms" in summary:
        rate = summary["false_alarms"]["rate"]["any"]
        windows = summary["false_alarms"]["windows"]
        text += (
            f"<p>Measured on {windows} unshifted windows of the same size drawn from the test "
            f"split: the check fired on {rate:.1%} of them.</p>"
        )
    return text


def page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style><h1>{html.escape(title)}</h1>{body}</html>\n"
    )


def write(path: Path, summary: dict, reference: Window, window: Window) -> None:
    """Write the report of one check (its summary, as `pipeline.drift.summary` builds it)."""
    alarms = ", ".join(summary["alarms"])
    title = f"Drift check: {'DRIFT (' + alarms + ')' if summary['drifted'] else 'no drift'}"
    body = (
        verdict_paragraph(summary)
        + tests_table(summary)
        + "<h2>Model outputs</h2>"
        + png(outputs_figure(reference, window))
        + "<h2>Inputs</h2>"
        + png(inputs_figure(reference, window))
        + "<h2>The window's newest inputs</h2>"
        + png(gallery_figure(window))
    )
    with atomic_file(path) as tmp:
        tmp.write_text(page(title, body))


def write_without_verdict(path: Path, note: str) -> None:
    """The report when there was too little traffic to compare."""
    with atomic_file(path) as tmp:
        tmp.write_text(page("Drift check: no verdict", f"<p>{html.escape(note)}.</p>"))
