"""The model artifact: everything `serve` and `predict` need, in one folder with nothing outside.

Layout of a model folder (packed as `model.tar.gz` by the launcher):

    model.json           format name and version, algorithm, resolved config, metrics,
                         featurizer settings (so an endpoint can take raw review text)
    weights.safetensors  the tensors; loaded without pickle
    vocab.txt            vocabulary, one word per line in feature-id order (when known)
    ...                  algorithm extras, e.g. k-means' `model_algo-1` for the built-in container
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .. import __version__
from ..errors import UserError
from ..files import atomic_directory

FORMAT_NAME = "review-nlp-model"
FORMAT_VERSION = 1
MANIFEST_NAME = "model.json"
WEIGHTS_NAME = "weights.safetensors"
VOCAB_NAME = "vocab.txt"


@dataclass
class Artifact:
    algorithm: str
    config: dict[str, Any]
    tensors: dict[str, torch.Tensor]
    vocabulary: list[str] | None = None
    featurizer: dict[str, Any] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def save_artifact(model_dir: str | os.PathLike, artifact: Artifact,
                  extra_files: dict[str, bytes] | None = None) -> Path:
    """Write `artifact` into `model_dir`, replacing its contents atomically.

    `model_dir` itself may be a mount point SageMaker created (/opt/ml/model), so its files are
    written into a temporary sibling folder first and then moved in one by one.
    """
    target = Path(model_dir)
    target.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "algorithm": artifact.algorithm,
        "config": artifact.config,
        "metrics": artifact.metrics,
        "featurizer": artifact.featurizer,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    staging_name = target.parent / f".{target.name}.staging"
    with atomic_directory(staging_name) as staging:
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in artifact.tensors.items()}
        save_file(tensors, str(staging / WEIGHTS_NAME))
        if artifact.vocabulary is not None:
            (staging / VOCAB_NAME).write_text(
                "".join(f"{word}\n" for word in artifact.vocabulary), encoding="utf-8")
        for name, data in (extra_files or {}).items():
            (staging / name).write_bytes(data)
        # model.json last: a folder without it is recognisably incomplete.
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    for item in sorted(staging_name.iterdir(), key=lambda p: p.name == MANIFEST_NAME):
        os.replace(item, target / item.name)
    staging_name.rmdir()
    return target


def load_artifact(model_dir: str | os.PathLike) -> Artifact:
    """Read a model folder written by `save_artifact`, rejecting other formats by name."""
    folder = Path(model_dir)
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise UserError(
            f"{manifest_path} not found: {folder} does not hold a review-nlp model "
            f"(expected {MANIFEST_NAME} and {WEIGHTS_NAME})")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT_NAME:
        raise UserError(f"{manifest_path} has format {manifest.get('format')!r}, "
                        f"expected {FORMAT_NAME!r}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError(
            f"{manifest_path} has format_version {version}, but this release reads version "
            f"{FORMAT_VERSION}; retrain the model or install the release that wrote it "
            f"(package version {manifest.get('package_version')})")
    tensors = load_file(str(folder / WEIGHTS_NAME))
    vocab_path = folder / VOCAB_NAME
    vocabulary = vocab_path.read_text(encoding="utf-8").splitlines() if vocab_path.is_file() else None
    return Artifact(
        algorithm=manifest["algorithm"],
        config=manifest["config"],
        tensors=tensors,
        vocabulary=vocabulary,
        featurizer=manifest.get("featurizer"),
        metrics=manifest.get("metrics") or {},
    )
