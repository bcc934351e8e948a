"""Local training jobs, run as SageMaker runs them.

The job folder is laid out exactly as SageMaker lays out /opt/ml. The container's `train` runs
on it as a subprocess or in the Docker image, and the results are packed as SageMaker packs
them (model.tar.gz, output.tar.gz), with metrics.json beside them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..files import atomic_path, atomic_write_text

logger = logging.getLogger(__name__)

RECORDIO = "application/x-recordio-protobuf"
CSV = "text/csv;label_size=0"
DATA_CHANNELS = ("train", "validation", "test")
MANIFEST_NAME = "manifest.json"


@dataclass
class LocalJobResult:
    job_name: str
    job_dir: Path
    model_tar: Path
    output_tar: Path
    metrics_path: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def read_channel_manifest(channels_dir: Path) -> dict[str, Any]:
    path = channels_dir / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path} not found: --channels must be a folder written by "
                        f"`launch.py prepare`")
    return json.loads(path.read_text())


def check_channels_algorithm(manifest: dict[str, Any], algorithm: str, channels: str) -> None:
    prepared_for = manifest.get("algorithm")
    if prepared_for != algorithm:
        raise UserError(
            f"channels {channels} were prepared for algorithm {prepared_for!r}, not "
            f"{algorithm!r}; run `launch.py prepare --algorithm {algorithm}` or train "
            f"--algorithm {prepared_for}")


def parse_hp_arguments(pairs: list[str]) -> dict[str, str]:
    """Turn `--hp name=value` arguments into SageMaker's string-to-string map."""
    hyperparameters = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise UserError(f"--hp {pair!r} is not NAME=VALUE, e.g. --hp num_topics=20")
        hyperparameters[name.strip()] = value.strip()
    return hyperparameters


def default_hyperparameters(algorithm: str, manifest: dict[str, Any]) -> dict[str, str]:
    """Hyperparameters the built-ins require, filled from the channels where they are known.

    The built-ins have no default for `num_topics` and `k`; 20 is the value the Amazon reviews
    workshop used for both.
    """
    defaults = {"algorithm": algorithm, "feature_dim": str(manifest["feature_dim"])}
    if algorithm == "ntm":
        defaults["num_topics"] = "20"
    elif algorithm == "kmeans":
        defaults["k"] = "20"
    return defaults


def content_type_of(manifest: dict[str, Any]) -> str:
    return CSV if str(manifest.get("content_type", RECORDIO)).startswith("text/csv") else RECORDIO


def layout_job_folder(job_dir: Path, channels_dir: Path, hyperparameters: dict[str, str],
                      content_type: str, hosts: tuple[str, ...] = ("algo-1",),
                      current_host: str = "algo-1") -> Path:
    """Write `job_dir` as SageMaker writes /opt/ml for one host and copy the channels in."""
    config_dir = job_dir / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    input_config = {}
    for channel in (*DATA_CHANNELS, "auxiliary"):
        source = channels_dir / channel
        if not source.is_dir():
            continue
        target = job_dir / "input" / "data" / channel
        shutil.copytree(source, target, dirs_exist_ok=True)
        input_config[channel] = {
            "ContentType": "text/plain" if channel == "auxiliary" else content_type,
            "TrainingInputMode": "File",
            "S3DistributionType": "FullyReplicated",
            "RecordWrapperType": "None",
        }
    if "train" not in input_config:
        raise UserError(f"{channels_dir / 'train'} not found: the channels have no train channel")
    (config_dir / "hyperparameters.json").write_text(
        json.dumps({name: str(value) for name, value in hyperparameters.items()}, indent=2))
    (config_dir / "inputdataconfig.json").write_text(json.dumps(input_config, indent=2))
    (config_dir / "resourceconfig.json").write_text(json.dumps(
        {"current_host": current_host, "hosts": list(hosts), "network_interface_name": "eth0"},
        indent=2))
    for folder in ("model", "output/data", "checkpoints"):
        (job_dir / folder).mkdir(parents=True, exist_ok=True)
    return job_dir


def training_command(mode: str, job_dir: Path, image: str) -> tuple[list[str], dict[str, str]]:
    """Return the command that runs the container's `train` on `job_dir`, and its environment."""
    env = dict(os.environ)
    if mode == "local":
        env["SAGEMAKER_BASE_DIR"] = str(job_dir)
        env.setdefault("PYTHONUNBUFFERED", "1")
        return [sys.executable, "-m", "review_nlp.container.train"], env
    if mode == "docker":
        require_docker_image(image)
        command = ["docker", "run", "--rm", "--pull", "never", "--network", "none",
                   "-v", f"{job_dir.resolve()}:/opt/ml"]
        if shutil.which("nvidia-smi"):
            command += ["--gpus", "all"]
        return command + [image, "train"], env
    raise ValueError(f"mode {mode!r} does not run a local job")


def require_docker_image(image: str) -> None:
    """Fail early, and without pulling from a registry, when `image` is not built locally."""
    found = subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False)
    if found.returncode != 0:
        raise UserError(f"Docker image {image} not found locally; build it first (see the "
                        f"README's image section) or pass --image")


def run_training_process(command: list[str], env: dict[str, str], job_dir: Path) -> None:
    """Run `command`, passing its log through, and turn a failure into the failure file's text.

    When the launcher is interrupted (Ctrl-C, SIGTERM), the child gets SIGTERM, which makes
    the container checkpoint and exit, and the launcher waits for it.
    """
    logger.info("Running %s", " ".join(command))
    process = subprocess.Popen(command, env=env)
    try:
        returncode = process.wait()
    except BaseException:
        process.terminate()
        try:
            process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            process.kill()
        raise
    completed = subprocess.CompletedProcess(command, returncode)
    if completed.returncode != 0:
        failure = job_dir / "output" / "failure"
        reason = failure.read_text(errors="replace").strip() if failure.is_file() else ""
        raise UserError(f"training failed (exit code {completed.returncode}): "
                        f"{reason or 'no output/failure file was written; see the log above'}")


def pack_tar_gz(folder: Path, tar_path: Path) -> Path:
    """Pack the contents of `folder` at the archive root, as SageMaker packs model.tar.gz."""
    with atomic_path(tar_path) as tmp:
        with tarfile.open(tmp, "w:gz") as archive:
            for item in sorted(folder.iterdir()):
                archive.add(item, arcname=item.name)
    return tar_path


def run_local_job(*, algorithm: str, channels_dir: Path, out_dir: Path,
                  hyperparameters: dict[str, str], job_name: str, mode: str = "local",
                  image: str = "review-nlp:latest") -> LocalJobResult:
    """Train in a job folder under `out_dir` and leave model.tar.gz, output.tar.gz, metrics.json."""
    manifest = read_channel_manifest(channels_dir)
    check_channels_algorithm(manifest, algorithm, str(channels_dir))
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder")
    resolved = {**default_hyperparameters(algorithm, manifest), **hyperparameters}
    resolved["algorithm"] = algorithm
    job_dir = out_dir / job_name
    if job_dir.exists():
        raise UserError(f"{job_dir} already exists; choose another --job-name")
    layout_job_folder(job_dir, channels_dir, resolved, content_type_of(manifest))

    started = time.monotonic()
    command, env = training_command(mode, job_dir, image)
    run_training_process(command, env, job_dir)
    seconds = time.monotonic() - started

    model_tar = pack_tar_gz(job_dir / "model", out_dir / "model.tar.gz")
    output_tar = pack_tar_gz(job_dir / "output", out_dir / "output.tar.gz")
    metrics = collect_metrics(job_dir, job_name=job_name, mode=mode, seconds=seconds,
                              hyperparameters=resolved)
    metrics_path = out_dir / "metrics.json"
    atomic_write_text(metrics_path, json.dumps(metrics, indent=2, sort_keys=True))
    logger.info("Model: %s; metrics: %s", model_tar, metrics_path)
    return LocalJobResult(job_name, job_dir, model_tar, output_tar, metrics_path, metrics)


def collect_metrics(job_dir: Path, *, job_name: str, mode: str, seconds: float,
                    hyperparameters: dict[str, str]) -> dict[str, Any]:
    """metrics.json: the container's final metrics and history plus how the job ran."""
    written = job_dir / "output" / "data" / "metrics.json"
    metrics = json.loads(written.read_text()) if written.is_file() else {}
    metrics.setdefault("final", {})
    metrics.setdefault("history", [])
    timing = dict(metrics.get("timing") or {})
    timing["job_wall_seconds"] = round(seconds, 3)
    metrics["timing"] = timing
    metrics["job"] = {"name": job_name, "mode": mode, "hyperparameters": hyperparameters}
    return metrics
