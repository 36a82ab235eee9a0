"""What a person reads after training: evaluation.json, plots, and the model card.

- output/data/evaluation.json: final metrics per channel (with confusion matrix, per-class and weighted
  scores), per-epoch history and time profile, cross-validation folds, hyperparameters, rows, timings.
- output/data/*.png: learning curves, the per-epoch time profile, ROC curve, confusion matrix.
- model/model_card.json + MODEL_CARD.md: task, data, metrics, intended use, limitations (in the spirit
  of SageMaker Model Cards), so the model directory explains itself.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optml.container.artifact import ModelMetadata
from optml.container.kinds import REGRESSION
from optml.train import bias
from optml.train.metrics import classification_report, regression_metrics, roc_curve


@dataclass
class ChannelResult:
    """Final-model predictions on one channel, in the terms the report needs."""

    rows: int
    files: int
    metrics: dict[str, Any]
    probabilities: np.ndarray | None = None  # classification
    class_indices: np.ndarray | None = None
    values: np.ndarray | None = None  # regression: predictions and labels, in the label's units
    true_values: np.ndarray | None = None


@dataclass
class TrainingReport:
    metadata: ModelMetadata
    channels: dict[str, ChannelResult]
    history: list[dict[str, float]]
    best_epoch: int | None = None
    stopped_early: bool = False
    cross_validation: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    profile: list[dict[str, Any]] = field(default_factory=list)  # per epoch: train/profiling.py Profiler.epochs
    analysis: dict[str, Any] = field(default_factory=dict)  # analysis.json: bias metrics, explanations


def channel_result(
    task: str,
    outputs_probabilities: np.ndarray | None,
    predictions: np.ndarray | None,
    targets: np.ndarray,
    loss: float,
    f_beta: float,
    files: int,
) -> ChannelResult:
    """Final metrics of one channel from the model's predictions (classes or original-unit values)."""
    if task == REGRESSION:
        assert predictions is not None
        metrics: dict[str, Any] = {"loss": loss} | regression_metrics(targets, predictions)
        return ChannelResult(len(targets), files, metrics, values=predictions, true_values=targets)
    assert outputs_probabilities is not None
    metrics = {"loss": loss} | classification_report(targets, outputs_probabilities, f_beta)
    return ChannelResult(len(targets), files, metrics, outputs_probabilities, targets)


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _rounded(value: Any) -> Any:
    return round(value, 4) if isinstance(value, float) else value


def write_evaluation(output_dir: Path, report: TrainingReport) -> Path:
    output_dir.mkdir(parents=True, exist_ok=True)
    document = {
        "task": report.metadata.task,
        "model": report.metadata.network.to_json(),
        "classes": report.metadata.classes,
        "channels": {
            name: {"rows": result.rows, "files": result.files, "metrics": result.metrics}
            for name, result in report.channels.items()
        },
        "history": report.history,
        "best_epoch": report.best_epoch,
        "stopped_early": report.stopped_early,
        "cross_validation": report.cross_validation,
        "hyperparameters": report.metadata.hyperparameters,
        "timings_seconds": {k: round(v, 3) for k, v in report.timings.items()},
        "profile": [{k: _rounded(v) for k, v in epoch.items()} for epoch in report.profile],
    }
    path = output_dir / "evaluation.json"
    path.write_text(json.dumps(_finite(document), indent=2) + "\n", encoding="utf-8")
    return path


def write_plots(output_dir: Path, report: TrainingReport) -> list[Path]:
    """Learning curves when there is a history (a training job's, not an evaluation's); ROC curve and
    confusion matrix for classification (on the held-out channel)."""
    plt = pyplot()
    output_dir.mkdir(parents=True, exist_ok=True)
    written = [_plot_learning_curves(output_dir, report)] if report.history else []
    if report.profile:
        written.append(_plot_profile(output_dir, report.profile))
    held_out = next((report.channels[c] for c in ("test", "validation", "train") if c in report.channels), None)
    if held_out is None or held_out.probabilities is None or held_out.class_indices is None:
        plt.close("all")
        return written
    classes = [str(c) for c in report.metadata.classes]
    fig, ax = plt.subplots(figsize=(5, 5))
    positive_classes = [1] if len(classes) == 2 else range(len(classes))
    for index in positive_classes:
        truth = (held_out.class_indices == index).astype(int)
        if 0 < truth.sum() < len(truth):
            fpr, tpr = roc_curve(truth, held_out.probabilities[:, index])
            ax.plot(fpr, tpr, label=f"class {classes[index]}")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
    ax.set(title="ROC curve", xlabel="false positive rate", ylabel="true positive rate")
    ax.legend(loc="lower right")
    written.append(save_figure(fig, output_dir / "roc_curve.png"))

    matrix = np.asarray(held_out.metrics["confusion_matrix"])
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 3, 1.2 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center", color="black")
    ax.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes)
    ax.set(title="confusion matrix", xlabel="predicted", ylabel="true")
    written.append(save_figure(fig, output_dir / "confusion_matrix.png"))
    return written


def _plot_learning_curves(output_dir: Path, report: TrainingReport) -> Path:
    from matplotlib import pyplot as plt

    epochs = range(1, len(report.history) + 1)
    names = sorted({key.split(":", 1)[1] for row in report.history for key in row})
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, metric in zip(axes, ["loss", _headline_metric(report.metadata.task, names)], strict=True):
        for channel in ("train", "validation"):
            values = [row.get(f"{channel}:{metric}", float("nan")) for row in report.history]
            if any(math.isfinite(v) for v in values):
                ax.plot(epochs, values, marker="o", markersize=3, label=channel)
        if report.best_epoch:
            ax.axvline(report.best_epoch, color="grey", linestyle="--", label=f"best epoch {report.best_epoch}")
        ax.set(title=metric, xlabel="epoch")
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, output_dir / "learning_curves.png")


PROFILE_PHASES = {  # profile key: bar label, colour
    "data_seconds": ("data loading", "tab:red"),
    "forward_backward_seconds": ("forward/backward", "tab:blue"),
    "optimizer_seconds": ("optimizer", "tab:green"),
    "other_seconds": ("other (metrics, validation, callbacks)", "tab:grey"),
}


def _plot_profile(output_dir: Path, profile: list[dict[str, Any]]) -> Path:
    """Stacked bars per epoch of where its time went: a tall red part is an input bottleneck."""
    from matplotlib import pyplot as plt

    labels = [f"{p['epoch']}*" if p.get("resumed") else str(p["epoch"]) for p in profile]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.4 * len(profile) + 3), 4))
    bottom = np.zeros(len(profile))
    positions = np.arange(len(profile))  # numbers, labelled below: matplotlib logs a note for each text axis
    for key, (label, colour) in PROFILE_PHASES.items():
        heights = np.array([p[key] for p in profile], dtype=float)
        ax.bar(positions, heights, bottom=bottom, label=label, color=colour)
        bottom += heights
    ax.set_xticks(positions, labels)
    resumed = " (* resumed: the part after the resume)" if any(p.get("resumed") for p in profile) else ""
    ax.set(title="time per epoch", xlabel=f"epoch{resumed}", ylabel="seconds")
    ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    return save_figure(fig, output_dir / "profile_timeline.png")


def _headline_metric(task: str, names: list[str]) -> str:
    preferred = "r2" if task == REGRESSION else "accuracy"
    return preferred if preferred in names else names[0]


def pyplot() -> Any:
    """matplotlib's pyplot for files: the Agg backend (no display in a training container)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write a figure as PNG and free it (the report's and the explanations' plots alike)."""
    from matplotlib import pyplot as plt

    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def model_card(report: TrainingReport) -> dict[str, Any]:
    meta = report.metadata
    data = {name: {"rows": r.rows, "files": r.files} for name, r in report.channels.items()}
    evaluation = {
        name: {k: v for k, v in r.metrics.items() if isinstance(v, int | float)} for name, r in report.channels.items()
    }
    limitations = [
        "Trained on the data described here only; performance on data from another distribution is unknown.",
        "Features must arrive in the same order and units as in training; standardization uses training statistics.",
    ]
    train_rows = report.channels["train"].rows if "train" in report.channels else 0
    if train_rows < 1000:
        limitations.append(f"Small training set ({train_rows} rows): metrics have wide uncertainty.")
    if "validation" not in report.channels and "test" not in report.channels:
        limitations.append("No held-out channel: the reported metrics are on training data and are optimistic.")
    top = top_features(report.analysis)
    return _finite(
        {
            "model_overview": {
                "task": meta.task,
                "architecture": meta.network.to_json(),
                "inputs": {"values_per_row": meta.feature_count, "feature_names": meta.feature_names or None},
                "outputs": {"classes": meta.classes} if meta.classes else {"value": "regression estimate"},
                "framework": meta.versions,
            },
            "intended_uses": {
                "purpose": f"{meta.task.replace('_', ' ')} on rows shaped like the training data",
                "not_for": "decisions without human review where errors are costly; data unlike the training data",
            },
            "training_details": {
                "data": data,
                "hyperparameters": meta.hyperparameters,
                "epochs_run": len(report.history),
                "best_epoch": report.best_epoch,
            },
            "evaluation_details": {"metrics": evaluation, "cross_validation": report.cross_validation},
            "bias": bias.summary(report.analysis) if has_bias(report.analysis) else None,
            "explainability": {"top_features": dict(top)} if top else None,
            "additional_information": {"limitations": limitations},
        }
    )


def write_model_card(model_dir: Path, report: TrainingReport) -> None:
    card = model_card(report)
    (model_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Model card: {report.metadata.task.replace('_', ' ')} ({report.metadata.network.kind})",
        "",
        "## Intended use",
        f"- {card['intended_uses']['purpose']}.",
        f"- Not for: {card['intended_uses']['not_for']}.",
        "",
        "## Data",
        *[
            f"- `{name}`: {info['rows']} rows from {info['files']} file(s)"
            for name, info in card["training_details"]["data"].items()
        ],
        "",
        "## Metrics",
        "| channel | " + " | ".join(_card_metric_names(card)) + " |",
        "|---|" + "---|" * len(_card_metric_names(card)),
    ]
    for channel, metrics in card["evaluation_details"]["metrics"].items():
        cells = [_fmt(metrics.get(name)) for name in _card_metric_names(card)]
        lines.append(f"| {channel} | " + " | ".join(cells) + " |")
    if report.cross_validation:
        lines += [
            "",
            f"Cross-validation ({report.cross_validation['k_folds']} folds, {report.cross_validation['strategy']}):",
        ]
        for name, stats in report.cross_validation["summary"].items():
            lines.append(f"- {name}: {_fmt(stats['mean'])} ± {_fmt(stats['std'])}")
    lines += analysis_lines(report.analysis)
    lines += [
        "",
        "## Limitations",
        *[f"- {item}" for item in card["additional_information"]["limitations"]],
        "",
    ]
    (model_dir / "MODEL_CARD.md").write_text("\n".join(lines), encoding="utf-8")


def top_features(document: dict[str, Any], count: int = 5) -> list[tuple[str, float]]:
    """The columns with the largest mean |SHAP| in analysis.json's explanations, largest first."""
    for method, labels in document.get("explanations", {}).items():
        if method == "pdp":
            continue
        for entry in labels.values():
            values = entry["global_shap_values"]
            return sorted(values.items(), key=lambda item: -item[1])[:count]
    return []


def has_bias(document: dict[str, Any]) -> bool:
    return "pre_training_bias_metrics" in document or "post_training_bias_metrics" in document


def analysis_lines(document: dict[str, Any]) -> list[str]:
    """The model card's bias summary and the columns that drive the predictions (from analysis.json)."""
    lines = []
    if has_bias(document):
        lines += ["", "## Bias", "", *bias.summary(document).splitlines()]
    top = top_features(document)
    if top:
        method = next(key for key in document["explanations"] if key != "pdp")
        lines += ["", f"## What drives the predictions (mean |SHAP|, {method})"]
        lines += [f"- {column}: {_fmt(value)}" for column, value in top]
    return lines


def _card_metric_names(card: dict[str, Any]) -> list[str]:
    first: dict[str, Any] = next(iter(card["evaluation_details"]["metrics"].values()), {})
    preferred = ["loss", "accuracy", "f1", "auc", "precision", "recall", "rmse", "mae", "r2"]
    return [name for name in preferred if name in first]


def _fmt(value: Any) -> str:
    return "—" if value is None else f"{value:.4g}"
