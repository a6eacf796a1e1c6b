"""Evaluation reports: metrics JSON, confusion-matrix and ROC PNGs, and a small HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from marco_svc.train.metrics import roc_curve


def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(confusion: np.ndarray, labels: list[str], path: Path, title: str) -> None:
    plt = _figure()
    size = 2.5 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(confusion, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true label")
    for i in range(len(labels)):
        for j in range(len(labels)):
            value = confusion[i, j]
            colour = "white" if value > 0.5 else "black"
            ax.text(j, i, f"{value:.1%}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(
    y_true: np.ndarray, probs: np.ndarray, labels: list[str], path: Path, title: str
) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for i, label in enumerate(labels):
        positive = y_true == i
        if positive.all() or not positive.any():
            continue
        fpr, tpr, _ = roc_curve(positive, probs[:, i])
        ax.plot(fpr, tpr, label=label, linewidth=1.2)
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate (recall)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _html(model: str, data: str, heads: dict[str, dict[str, Any]]) -> str:
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>Evaluation of {html.escape(model)}</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
        "td,th{padding:2px 8px;text-align:right}</style>",
        f"<h1>{html.escape(model)}</h1><p>data: {html.escape(data)}</p>",
    ]
    for head, figures in heads.items():
        crystal = figures["crystal"]
        rows = "".join(
            f"<tr><th>{html.escape(name)}</th><td>{point['recall']:.1%}</td>"
            f"<td>{point['fpr']:.2%}</td><td>{point['threshold']:.3f}</td></tr>"
            for name, point in crystal["operating_points"].items()
        )
        rules = "".join(
            f"<tr><th>{name}</th><td>{_pct(rule['miss_rate'])}</td>"
            f"<td>{_pct(rule['false_positive_rate'])}</td></tr>"
            for name, rule in crystal["top_k_rules"].items()
        )
        parts += [
            f"<h2>{html.escape(head)}: {figures['examples']} images, "
            f"accuracy {figures['accuracy']:.1%}</h2>",
            f"<p>top-2 {figures['top_k_accuracy']['top_2']:.1%}, "
            f"top-3 {figures['top_k_accuracy']['top_3']:.1%}; crystal ROC AUC "
            f"{_num(crystal['roc_auc'])}</p>",
            "<table><tr><th>crystal rule</th><th>missed crystals</th><th>false positives</th>"
            f"</tr>{rules}</table>",
            "<table><tr><th>operating point</th><th>recall</th><th>FPR</th><th>threshold</th>"
            f"</tr>{rows}</table>",
            f"<img src='confusion_{head}.png' alt='confusion matrix'>",
            f"<img src='roc_{head}.png' alt='ROC curves'>",
        ]
    return "\n".join(parts)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def write_report(
    out: Path,
    model: str,
    data: str,
    heads: dict[str, tuple[np.ndarray, np.ndarray, dict[str, Any]]],
) -> dict[str, Path]:
    """Write metrics.json, per-head confusion/ROC PNGs and report.html into `out`.

    `heads` maps a scheme to (y_true indices, probabilities, figures from metrics.evaluate).
    """
    out.mkdir(parents=True, exist_ok=True)
    files = {"json": out / "metrics.json", "html": out / "report.html"}
    figures = {head: value[2] for head, value in heads.items()}
    files["json"].write_text(
        json.dumps({"model": model, "data": data, "heads": figures}, indent=2) + "\n"
    )
    for head, (y_true, probs, result) in heads.items():
        labels = result["labels"]
        confusion = np.array(result["confusion"]["rows_true_columns_predicted"])
        files[f"confusion_{head}"] = out / f"confusion_{head}.png"
        files[f"roc_{head}"] = out / f"roc_{head}.png"
        plot_confusion(confusion, labels, files[f"confusion_{head}"], f"{model}: {head}")
        plot_roc(y_true, probs, labels, files[f"roc_{head}"], f"{model}: {head}")
    files["html"].write_text(_html(model, data, figures), encoding="utf-8")
    return files
