"""The /opt/ml contract: where SageMaker puts configuration, data, the model and outputs.

Every path hangs off `SAGEMAKER_BASE_DIR` (default /opt/ml), the variable the SageMaker
training toolkit honours, so tests and local runs use a folder laid out the same way.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from ..errors import UserError

DEFAULT_BASE_DIR = "/opt/ml"
DEFAULT_HOST = "algo-1"

FILE_MODE = "File"
FAST_FILE_MODE = "FastFile"
PIPE_MODE = "Pipe"
INPUT_MODES = (FILE_MODE, FAST_FILE_MODE, PIPE_MODE)

FULLY_REPLICATED = "FullyReplicated"
SHARDED_BY_S3_KEY = "ShardedByS3Key"


@dataclass(frozen=True)
class ChannelConfig:
    """One entry of inputdataconfig.json."""

    name: str
    content_type: str | None = None
    input_mode: str = FILE_MODE
    distribution: str = FULLY_REPLICATED
    record_wrapper: str = "None"

    @classmethod
    def from_json(cls, name: str, entry: Mapping[str, Any]) -> "ChannelConfig":
        input_mode = entry.get("TrainingInputMode") or FILE_MODE
        if input_mode not in INPUT_MODES:
            raise UserError(
                f"channel {name!r} has TrainingInputMode={input_mode!r}; "
                f"supported modes are {', '.join(INPUT_MODES)}")
        return cls(
            name=name,
            content_type=entry.get("ContentType") or None,
            input_mode=input_mode,
            distribution=entry.get("S3DistributionType") or FULLY_REPLICATED,
            record_wrapper=entry.get("RecordWrapperType") or "None",
        )


@dataclass(frozen=True)
class ResourceConfig:
    """resourceconfig.json: this host and every host of the job, sorted as SageMaker sorts them."""

    current_host: str = DEFAULT_HOST
    hosts: tuple[str, ...] = (DEFAULT_HOST,)
    network_interface_name: str = "eth0"

    @property
    def rank(self) -> int:
        return self.hosts.index(self.current_host)

    @property
    def world_size(self) -> int:
        return len(self.hosts)

    @property
    def master_host(self) -> str:
        return self.hosts[0]


@dataclass
class TrainingEnvironment:
    """Paths and configuration of one training container, read once at start."""

    base_dir: Path
    hyperparameters: dict[str, str] = field(default_factory=dict)
    channels: dict[str, ChannelConfig] = field(default_factory=dict)
    resources: ResourceConfig = field(default_factory=ResourceConfig)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "TrainingEnvironment":
        environ = os.environ if environ is None else environ
        base_dir = Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR)
        env = cls(base_dir=base_dir)
        env.hyperparameters = read_hyperparameters(env.hyperparameters_path)
        env.channels = read_input_data_config(env.input_data_config_path, env.data_dir)
        env.resources = read_resource_config(env.resource_config_path)
        return env

    # configuration
    @property
    def config_dir(self) -> Path:
        return self.base_dir / "input" / "config"

    @property
    def hyperparameters_path(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def input_data_config_path(self) -> Path:
        return self.config_dir / "inputdataconfig.json"

    @property
    def resource_config_path(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    # inputs; read-only in FastFile mode, so nothing is ever written below data_dir
    @property
    def data_dir(self) -> Path:
        return self.base_dir / "input" / "data"

    def channel_dir(self, name: str) -> Path:
        return self.data_dir / name

    def pipe_path(self, name: str, epoch: int = 0) -> Path:
        """Return the FIFO SageMaker creates for `name` in Pipe mode, one per pass over the data."""
        return self.data_dir / f"{name}_{epoch}"

    # outputs
    @property
    def model_dir(self) -> Path:
        return self.base_dir / "model"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def output_data_dir(self) -> Path:
        return self.output_dir / "data"

    @property
    def failure_path(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoint_dir(self) -> Path:
        """SageMaker's default checkpoint_local_path, synced with checkpoint_s3_uri."""
        return self.base_dir / "checkpoints"


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise UserError(f"{path} is not valid JSON: {error}") from error


def _as_string(value: Any) -> str:
    # SageMaker always writes strings; a hand-written file may hold numbers or lists.
    return value if isinstance(value, str) else json.dumps(value)


def read_hyperparameters(path: Path) -> dict[str, str]:
    if not path.is_file():
        return {}
    raw = _read_json(path)
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object of name: value strings")
    return {str(name): _as_string(value) for name, value in raw.items()}


def read_input_data_config(path: Path, data_dir: Path) -> dict[str, ChannelConfig]:
    """Channels from inputdataconfig.json, or, when it is absent, the folders under data_dir."""
    if path.is_file():
        raw = _read_json(path)
        if not isinstance(raw, dict):
            raise UserError(f"{path} must hold a JSON object of channel name: settings")
        return {name: ChannelConfig.from_json(name, entry or {}) for name, entry in raw.items()}
    if not data_dir.is_dir():
        return {}
    return {item.name: ChannelConfig(item.name) for item in sorted(data_dir.iterdir())
            if item.is_dir()}


def read_resource_config(path: Path) -> ResourceConfig:
    if not path.is_file():
        return ResourceConfig()
    raw = _read_json(path)
    current = raw.get("current_host") or DEFAULT_HOST
    hosts = tuple(sorted(raw.get("hosts") or [current]))
    if current not in hosts:
        raise UserError(f"{path}: current_host {current!r} is not in hosts {list(hosts)}")
    return ResourceConfig(
        current_host=current,
        hosts=hosts,
        network_interface_name=raw.get("network_interface_name") or "eth0",
    )
