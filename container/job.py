"""One training job, step by step: configuration, channels, process group, fit, outputs."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Any, Callable

from ..models import registry
from ..models.training import StopSignal, is_main_process, select_device
from . import outputs
from .distributed import init_distributed
from .environment import FULLY_REPLICATED, TrainingEnvironment
from .hyperparameters import build_config, choose_algorithm, describe_config
from .inputs import TRAIN, check_feature_dim, read_inputs

logger = logging.getLogger(__name__)


def run_training(env: TrainingEnvironment, stop: StopSignal,
                 on_fit_start: Callable[[], None] | None = None) -> None:
    """Train the algorithm the hyperparameters name and write its outputs (rank 0 only).

    `on_fit_start` is called just before the model's fit. From then on a SIGTERM leads to a
    checkpoint instead of an immediate exit.
    """
    started = time.monotonic()
    resources = env.resources
    # The models' metric lines name this host (`#quality_metric: host=algo-1, ...`).
    os.environ["SM_CURRENT_HOST"] = resources.current_host

    # configuration
    logger.info("Reading provided configuration from %s: %s", env.hyperparameters_path,
                env.hyperparameters)
    algorithm = choose_algorithm(env.hyperparameters)
    config = build_config(registry.config_class(algorithm), env.hyperparameters, algorithm)
    logger.info("Final configuration: %s", describe_config(config))

    # channels
    inputs = read_inputs(env)
    check_feature_dim(config.feature_dim, inputs)

    # process group across hosts; each host trains on its share of the train channel
    device = select_device()
    distributed = init_distributed(resources, use_cuda=device.type == "cuda")
    train = inputs.train
    if distributed and env.channels[TRAIN].distribution == FULLY_REPLICATED:
        train = train.shard(resources.rank, resources.world_size)
        logger.info("Train channel is FullyReplicated: this host trains on rows %d::%d "
                    "(%d records)", resources.rank, resources.world_size, train.n_samples)

    # fit, resuming from the newest checkpoint when the folder contains one
    model = registry.model_class(algorithm)(config, device=device)
    env.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    setup_seconds = time.monotonic() - started
    if on_fit_start is not None:
        on_fit_start()
    fit_started = time.monotonic()
    history = model.fit(train, inputs.validation, inputs.test, vocabulary=inputs.vocabulary,
                        checkpoint_dir=env.checkpoint_dir, stop_signal=stop)
    fit_seconds = time.monotonic() - fit_started

    if not is_main_process():
        logger.info("No model is serialized on a non-master node")
        return

    # outputs
    write_started = time.monotonic()
    outputs.save_model(env.model_dir, model, vocabulary=inputs.vocabulary,
                       featurizer=inputs.featurizer)
    env.output_data_dir.mkdir(parents=True, exist_ok=True)
    outputs.write_topics(env.output_data_dir, model)
    outputs.write_loss_plot(env.output_data_dir, history)
    timing = {"setup_seconds": setup_seconds, "fit_seconds": fit_seconds,
              "write_seconds": time.monotonic() - write_started,
              "total_seconds": time.monotonic() - started}
    path = outputs.write_metrics(
        env.output_data_dir, algorithm=algorithm, config=_config_dict(config),
        final=dict(getattr(model, "metrics_", {}) or {}), history=history, timing=timing,
        hosts=resources.world_size)
    logger.info("Wrote %s; training took %.1f s", path, timing["total_seconds"])


def _config_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
