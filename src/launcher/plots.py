"""PNG plots for the comparison report, drawn with matplotlib's non-interactive Agg backend."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
import numpy as np  # noqa: E402


def plot_loss_curves(history: list[dict], path: Path, title: str) -> Path | None:
    """Plot one line per `<channel>:<metric>` series in the per-epoch history."""
    series = sorted({key for row in history for key in row if ":" in key})
    if not history or not series:
        return None
    figure, axis = plt.subplots(figsize=(7, 4))
    for key in series:
        points = [(row["epoch"], row[key]) for row in history if key in row]
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=key)
    axis.set_xlabel("epoch")
    axis.set_title(title)
    axis.legend(fontsize="small")
    return _save(figure, path)


def plot_topic_words(topics: Sequence[Sequence[str]], weights: Sequence[Sequence[float]],
                     path: Path, title: str, max_topics: int = 12, top_n: int = 8) -> Path:
    """Horizontal bars of each topic's top words, a panel per topic."""
    shown = min(len(topics), max_topics)
    columns = 4
    rows = (shown + columns - 1) // columns
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.4 * rows), squeeze=False)
    for index, axis in enumerate(axes.flat):
        if index >= shown:
            axis.axis("off")
            continue
        words = list(topics[index])[:top_n][::-1]
        values = list(weights[index])[:top_n][::-1]
        axis.barh(words, values, color="tab:blue")
        axis.set_title(f"topic {index}", fontsize="small")
        axis.tick_params(labelsize="x-small")
    figure.suptitle(title)
    return _save(figure, path)


def plot_cluster_sizes(sizes: dict[str, np.ndarray], path: Path, title: str) -> Path:
    """Grouped bars of records per cluster, clusters sorted by size within each model."""
    figure, axis = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(sizes), 1)
    for offset, (name, counts) in enumerate(sizes.items()):
        ordered = np.sort(np.asarray(counts))[::-1]
        axis.bar(np.arange(len(ordered)) + offset * width, ordered, width=width, label=name)
    axis.set_xlabel("cluster (largest first)")
    axis.set_ylabel("test records")
    axis.set_title(title)
    axis.legend(fontsize="small")
    return _save(figure, path)


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str], path: Path,
                          title: str) -> Path:
    figure, axis = plt.subplots(figsize=(5, 4.5))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels)
    axis.set_yticks(range(len(labels)), labels)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, str(value), ha="center", va="center", fontsize="small",
                  color="white" if value > matrix.max() / 2 else "black")
    figure.colorbar(image, ax=axis)
    axis.set_title(title)
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
