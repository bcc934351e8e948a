"""The training channels: train, validation and test feature data, and the auxiliary channel
with vocab.txt and featurizer.json.

File and FastFile mode channels are folders under input/data; FastFile folders are read-only
mounts, so nothing is ever written there. Pipe mode channels are FIFOs named
`<channel>_<epoch>` that SageMaker fills with the channel's files, one FIFO per pass.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError, InvalidHyperparameter, UserError
from ..models.training import FeatureData
from .environment import PIPE_MODE, ChannelConfig, TrainingEnvironment

logger = logging.getLogger(__name__)

TRAIN = "train"
DATA_CHANNELS = (TRAIN, "validation", "test")
AUXILIARY = "auxiliary"
KNOWN_CHANNELS = DATA_CHANNELS + (AUXILIARY,)
VOCAB_NAME = "vocab.txt"
FEATURIZER_NAME = "featurizer.json"

# SageMaker creates a Pipe mode FIFO shortly after the container starts.
PIPE_WAIT_S = 600.0


@dataclass
class TrainingInputs:
    train: FeatureData
    validation: FeatureData | None = None
    test: FeatureData | None = None
    vocabulary: list[str] | None = None
    featurizer: dict[str, Any] | None = None

    def data_channels(self) -> dict[str, FeatureData]:
        channels = {TRAIN: self.train, "validation": self.validation, "test": self.test}
        return {name: data for name, data in channels.items() if data is not None}


def check_channels(channels: dict[str, ChannelConfig]) -> None:
    unknown = sorted(set(channels) - set(KNOWN_CHANNELS))
    if unknown:
        raise UserError(
            f"unknown input channel {', '.join(unknown)}; the channels are "
            f"{', '.join(KNOWN_CHANNELS)} (only train is required)")
    if TRAIN not in channels:
        raise UserError("the train channel is missing; give the job a channel named train")
    auxiliary = channels.get(AUXILIARY)
    if auxiliary is not None and auxiliary.input_mode == PIPE_MODE:
        raise UserError("the auxiliary channel must use TrainingInputMode File or FastFile, "
                        "because it holds two named files (vocab.txt, featurizer.json)")


def read_inputs(env: TrainingEnvironment) -> TrainingInputs:
    check_channels(env.channels)
    data = {name: read_data_channel(env, env.channels[name])
            for name in DATA_CHANNELS if name in env.channels}
    vocabulary, featurizer = None, None
    if AUXILIARY in env.channels:
        vocabulary, featurizer = read_auxiliary(env.channel_dir(AUXILIARY))
    return TrainingInputs(train=data[TRAIN], validation=data.get("validation"),
                          test=data.get("test"), vocabulary=vocabulary, featurizer=featurizer)


def read_data_channel(env: TrainingEnvironment, channel: ChannelConfig) -> FeatureData:
    from ..data.channels import read_channel

    started = time.monotonic()
    if channel.input_mode == PIPE_MODE:
        data = read_pipe(env.pipe_path(channel.name, 0), channel)
    else:
        folder = env.channel_dir(channel.name)
        if not folder.is_dir():
            raise UserError(f"channel {channel.name}: folder {folder} not found")
        data = read_channel(folder, channel.content_type)
    logger.info("Channel %s (%s mode, %s): %d records, %d features, read in %.2f s",
                channel.name, channel.input_mode, channel.content_type or "content type detected",
                data.n_samples, data.feature_dim, time.monotonic() - started)
    if data.n_samples == 0:
        raise DataError(f"the {channel.name} channel contains no records")
    return data


def read_pipe(fifo: Path, channel: ChannelConfig, wait_s: float = PIPE_WAIT_S) -> FeatureData:
    """Read the first pass of a Pipe mode channel into memory.

    NOTE: the models train on in-memory data for every epoch, so only `<channel>_0` is read;
    later FIFOs (`<channel>_1`, ...) are never opened. SageMaker creates the next FIFO only
    once the previous one has been read to the end, and does not require it to be read.
    """
    from ..data.channels import read_channel

    deadline = time.monotonic() + wait_s
    while not fifo.exists():
        if time.monotonic() > deadline:
            raise UserError(f"channel {channel.name}: Pipe mode FIFO {fifo} did not appear "
                            f"within {wait_s:.0f} s")
        time.sleep(0.1)
    return read_channel(fifo, channel.content_type)


def read_auxiliary(folder: Path) -> tuple[list[str] | None, dict[str, Any] | None]:
    """vocab.txt and featurizer.json from the auxiliary channel; either may be absent."""
    from ..data.channels import read_vocab_txt

    vocabulary, featurizer = None, None
    vocab_path = folder / VOCAB_NAME
    if vocab_path.is_file():
        vocabulary = read_vocab_txt(vocab_path)
        logger.info("Vocabulary: %d words from %s", len(vocabulary), vocab_path)
    featurizer_path = folder / FEATURIZER_NAME
    if featurizer_path.is_file():
        try:
            featurizer = json.loads(featurizer_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise DataError(f"featurizer.json is not valid JSON: {error}",
                            path=str(featurizer_path)) from error
        if not isinstance(featurizer, dict):
            raise DataError("featurizer.json must hold a JSON object", path=str(featurizer_path))
    if vocabulary is None and featurizer is None:
        logger.warning("The auxiliary channel %s has neither %s nor %s", folder, VOCAB_NAME,
                       FEATURIZER_NAME)
    if featurizer is not None and vocabulary is None:
        raise DataError(f"{FEATURIZER_NAME} needs {VOCAB_NAME} beside it: the featurizer's "
                        f"columns are the vocabulary's words", path=str(featurizer_path))
    return vocabulary, featurizer


def check_feature_dim(feature_dim: int, inputs: TrainingInputs) -> None:
    """Every channel must have `feature_dim` columns, and the vocabulary as many words."""
    for name, data in inputs.data_channels().items():
        if data.feature_dim != feature_dim:
            raise InvalidHyperparameter(
                "feature_dim", feature_dim,
                f"does not match the {name} channel, whose records have {data.feature_dim} "
                f"features; set feature_dim={data.feature_dim}")
    if inputs.vocabulary is not None and len(inputs.vocabulary) != feature_dim:
        raise InvalidHyperparameter(
            "feature_dim", feature_dim,
            f"does not match auxiliary/{VOCAB_NAME}, which has {len(inputs.vocabulary)} words")
