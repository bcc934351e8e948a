"""Outputs of a finished training job: the model in model/, and metrics.json, loss curves and
topics in output/data/ (which SageMaker packs as output.tar.gz)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from ..files import atomic_path, atomic_write_text
from ..models.artifact import save_artifact

logger = logging.getLogger(__name__)

METRICS_NAME = "metrics.json"
PLOT_NAME = "loss_curves.png"
TOPICS_NAME = "topics.txt"
# The file name the built-in K-Means container and its users' notebooks read.
MXNET_MODEL_NAME = "model_algo-1"


def save_model(model_dir: Path, model: Any, *, vocabulary: list[str] | None,
               featurizer: dict[str, Any] | None) -> None:
    """Write the artifact, plus the built-in's `model_algo-1` where the model can make one."""
    artifact = model.to_artifact(vocabulary=vocabulary, featurizer=featurizer)
    extra_files = {}
    if hasattr(model, "to_mxnet_model_file"):
        extra_files[MXNET_MODEL_NAME] = model.to_mxnet_model_file()
    logger.info("Serializing model to %s", model_dir)
    save_artifact(model_dir, artifact, extra_files=extra_files)


def _json_safe(value: Any) -> Any:
    """Floats JSON cannot carry (inf, nan) become strings, so metrics.json stays valid JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if hasattr(value, "item"):  # numpy and torch scalars
        return _json_safe(value.item())
    return value


def write_metrics(output_data_dir: Path, *, algorithm: str, config: dict[str, Any],
                  final: dict[str, Any], history: list[dict[str, Any]],
                  timing: dict[str, float], hosts: int) -> Path:
    document = {
        "algorithm": algorithm,
        "config": config,
        "final": final,
        "history": history,
        "timing": {name: round(seconds, 3) for name, seconds in timing.items()},
        "hosts": hosts,
    }
    path = output_data_dir / METRICS_NAME
    atomic_write_text(path, json.dumps(_json_safe(document), indent=2, sort_keys=True))
    return path


def write_topics(output_data_dir: Path, model: Any) -> Path | None:
    """Write one line per topic with its most probable words (word ids without a vocabulary)."""
    if not hasattr(model, "top_words"):
        return None
    lines = [f"topic {index}: {' '.join(str(word) for word in words)}\n"
             for index, words in enumerate(model.top_words())]
    path = output_data_dir / TOPICS_NAME
    atomic_write_text(path, "".join(lines))
    return path


def _curves(history: list[dict[str, Any]]) -> dict[str, dict[str, tuple[list, list]]]:
    """{metric name: {channel: (epochs, values)}} from rows like {"epoch": 1, "train:x": ...}."""
    curves: dict[str, dict[str, tuple[list, list]]] = {}
    for row in history:
        epoch = row.get("epoch")
        for key, value in row.items():
            if ":" not in key or not isinstance(value, (int, float)):
                continue
            channel, name = key.split(":", 1)
            epochs, values = curves.setdefault(name, {}).setdefault(channel, ([], []))
            epochs.append(epoch)
            values.append(value)
    return curves


def write_loss_plot(output_data_dir: Path, history: list[dict[str, Any]]) -> Path | None:
    """Plot one panel per metric (train and validation curves over epochs) into a PNG."""
    curves = _curves(history)
    if not curves:
        return None
    from matplotlib.figure import Figure  # the Agg canvas; no display, no pyplot state

    names = sorted(curves)
    figure = Figure(figsize=(5.0 * min(len(names), 3), 3.5 * math.ceil(len(names) / 3)))
    for index, name in enumerate(names, start=1):
        axes = figure.add_subplot(math.ceil(len(names) / 3), min(len(names), 3), index)
        for channel, (epochs, values) in sorted(curves[name].items()):
            axes.plot(epochs, values, marker="o", markersize=3, label=channel)
        axes.set_title(name)
        axes.set_xlabel("epoch")
        axes.legend()
    figure.tight_layout()
    path = output_data_dir / PLOT_NAME
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    return path
