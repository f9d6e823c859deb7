"""Figures of training runs: the metrics a `Trainer` logged, against the optimizer step (He & Glass 2020's hit
rate and max-ratio during negative training, for instance)."""

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402 (the backend is chosen first)


def plot_training_curves(
    log_history: Sequence[dict], metrics: Sequence[str], path: str | Path, title: str = ""
) -> list[str]:
    """One panel per metric of `metrics` that `log_history` (`Trainer.state.log_history`) holds, its values against
    `step`, saved as a PNG at `path`. Returns the metrics plotted; nothing is written when none was logged."""
    series = {}
    for metric in metrics:
        points = [(entry["step"], entry[metric]) for entry in log_history if metric in entry and "step" in entry]
        if points:
            series[metric] = points
    if not series:
        return []
    figure, axes = plt.subplots(len(series), 1, figsize=(6, 2.4 * len(series)), sharex=True, squeeze=False)
    for axis, (metric, points) in zip(axes[:, 0], series.items()):
        steps, values = zip(*points)
        axis.plot(steps, values, marker="o", markersize=2)
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("optimizer step")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return list(series)
