"""Figures: the metrics a `Trainer` logged against the optimizer step (He & Glass 2020's hit rate and max-ratio
during negative training, for instance), and the success-rate curves of Liu et al. (2019, Figure 2)."""

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


def plot_success_curves(lists: dict, thresholds: Sequence[float], path: str | Path) -> None:
    """Liu et al. (2019) Figure 2: one panel per (target list, length bucket), the success rate of each method
    against the similarity threshold. `lists`: {list name: {bucket: {method: {"success_rates": [...]}}}}."""
    rows = [(name, bucket, methods) for name, buckets in lists.items() for bucket, methods in buckets.items()]
    columns = max(len(buckets) for buckets in lists.values())
    figure, axes = plt.subplots(len(lists), columns, figsize=(3.6 * columns, 3.0 * len(lists)), squeeze=False,
                                sharey=True)
    for axis in axes.flat:
        axis.set_visible(False)
    for index, (name, bucket, methods) in enumerate(rows):
        axis = axes[index // columns, index % columns]
        axis.set_visible(True)
        for method, summary in methods.items():
            if isinstance(summary, dict) and "success_rates" in summary and method != "Real Input":
                axis.plot(thresholds, summary["success_rates"], marker="o", markersize=3, label=method)
        axis.set_title(f"{name}, length {bucket} ({methods['targets']} targets)", fontsize=9)
        axis.set_xlabel("similarity threshold")
        axis.set_ylim(0, 1.02)
        axis.grid(alpha=0.3)
    axes[0, 0].set_ylabel("success rate")
    labelled = [axis for axis in axes.flat if axis.get_legend_handles_labels()[0]]
    if labelled:  # a bucket without targets has no curves: the legend goes on the first panel that has some
        labelled[0].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
