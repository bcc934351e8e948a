"""`--mode sagemaker` of train, deploy and compare: channels to S3, CreateTrainingJob with our
image (or the built-in one), logs and progress while it runs, metrics.json beside the model.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

from ..container.metrics import metric_definitions
from ..data.storage import download_file, is_s3_uri, list_files, upload_file
from ..errors import UserError
from .aws import aws_client, resolve_role_arn
from .built_ins import built_in_hyperparameters, built_in_image_uri
from .endpoints import deploy_endpoint
from .job_folders import (CSV, DATA_CHANNELS, MANIFEST_NAME, check_channels_algorithm,
                          default_hyperparameters)
from .pricing import PRICE_SOURCE, estimate_training_cost
from .s3_uploads import join_s3_uri, upload_channels
from .training_jobs import (Channel, build_training_job_request, make_job_name,
                            start_training_job, stream_training_logs, training_job_summary,
                            wait_for_training_job)

logger = logging.getLogger(__name__)


def _require(value: str | None, option: str, mode_note: str = "--mode sagemaker") -> str:
    if not value:
        raise UserError(f"{mode_note} needs {option}")
    return value


def check_hyperparameters(algorithm: str, hyperparameters: dict[str, str]) -> None:
    """Parse the hyperparameters as the container will, so bad ones fail before any upload."""
    from ..container.hyperparameters import build_config
    from ..models.registry import config_class

    build_config(config_class(algorithm), hyperparameters, algorithm)


def check_instance_count(count: int) -> None:
    if count < 1:
        raise UserError(f"--instance-count={count} must be at least 1")


def channel_uris(channels: str, algorithm: str, job_name: str, s3_prefix: str | None
                 ) -> tuple[dict[str, Channel], dict[str, Any]]:
    """S3 channels for the job (uploading local ones under the job's prefix) and the manifest."""
    with tempfile.TemporaryDirectory(prefix="review-nlp-manifest-") as scratch:
        if is_s3_uri(channels):
            manifest_path = Path(scratch) / MANIFEST_NAME
            download_file(join_s3_uri(channels, MANIFEST_NAME), manifest_path)
            manifest = json.loads(manifest_path.read_text())
            present = {uri.rstrip("/").split("/")[-2] for uri in list_files(channels.rstrip("/") + "/")
                       if uri.count("/") > channels.rstrip("/").count("/") + 1}
            uris = {name: join_s3_uri(channels, name) + "/" for name in
                    (*DATA_CHANNELS, "auxiliary") if name in present}
        else:
            manifest = json.loads((Path(channels) / MANIFEST_NAME).read_text())
            prefix = _require(s3_prefix, "--s3-prefix to upload local --channels")
            uris = upload_channels(channels, prefix, job_name)
    check_channels_algorithm(manifest, algorithm, channels)
    content_type = CSV if str(manifest.get("content_type", "")).startswith("text/csv") else None
    return ({name: Channel(uri, content_type=None if name == "auxiliary" else content_type)
             for name, uri in uris.items() if name in (*DATA_CHANNELS, "auxiliary")}, manifest)


def built_in_channel_uris(algorithm: str, channels: dict[str, Channel]) -> dict[str, Channel]:
    """Return the built-in's channels over the same data.

    NTM gets only `auxiliary/vocab.txt` (an S3Prefix naming one object), because our
    auxiliary folder also contains featurizer.json. BlazingText reads text, so the rating
    comparison uses the `blazingtext/<channel>/` lines that `prepare` writes beside the
    channels; `train` is required and `validation` used when present.
    """
    if algorithm == "rating":
        root = channels["train"].s3_uri.rstrip("/").rsplit("/", 1)[0]
        return {name: Channel(join_s3_uri(root, "blazingtext", name) + "/",
                              content_type="text/plain")
                for name in ("train", "validation") if name in channels}
    built_in = {name: channel for name, channel in channels.items() if name != "auxiliary"}
    if algorithm == "ntm" and "auxiliary" in channels:
        built_in["auxiliary"] = Channel(channels["auxiliary"].s3_uri.rstrip("/") + "/vocab.txt",
                                        content_type="text/plain")
    return built_in


def run_training_job(*, job_name: str, image_uri: str, role_arn: str, channels: dict[str, Channel],
                     output_path: str, hyperparameters: dict[str, str], algorithm: str | None,
                     metrics: list[dict[str, str]], args: argparse.Namespace,
                     wait: bool = True) -> dict[str, Any]:
    request = build_training_job_request(
        job_name=job_name, image_uri=image_uri, role_arn=role_arn, channels=channels,
        output_path=output_path, instance_type=args.instance_type,
        instance_count=getattr(args, "instance_count", 1),
        volume_size_gb=getattr(args, "volume_size", 30), hyperparameters=hyperparameters,
        algorithm=algorithm, metric_definitions=metrics,
        max_runtime_seconds=getattr(args, "max_run", 86400),
        use_spot=getattr(args, "spot", False),
        max_wait_seconds=getattr(args, "max_wait", None) or (
            2 * getattr(args, "max_run", 86400) if getattr(args, "spot", False) else None),
        checkpoint_s3_uri=getattr(args, "checkpoint_s3_uri", None))
    start_training_job(request)
    if not wait:
        return {"job_name": job_name, "status": "InProgress"}
    stream_training_logs(job_name, follow=True, out=sys.stderr)
    wait_for_training_job(job_name, progress=sys.stderr)
    return training_job_summary(job_name).to_dict()


def train_on_sagemaker(args: argparse.Namespace, hyperparameters: dict[str, str],
                       job_name: str) -> dict[str, Any]:
    """Run `train --mode sagemaker`; return the job summary, also written as metrics.json."""
    image_uri = _require(args.image_uri, "--image-uri (the ECR URI of the pushed image)")
    role_arn = resolve_role_arn(args.role)
    if not is_s3_uri(args.out):
        raise UserError(f"--out {args.out} must be an s3:// prefix with --mode sagemaker")
    check_instance_count(args.instance_count)
    if not is_s3_uri(args.channels):
        # local channels: check everything before uploading them
        local_manifest = json.loads((Path(args.channels) / MANIFEST_NAME).read_text()) \
            if (Path(args.channels) / MANIFEST_NAME).is_file() else None
        if local_manifest is None:
            raise UserError(f"{Path(args.channels) / MANIFEST_NAME} not found: --channels must "
                            f"be a folder written by `launch.py prepare`")
        check_channels_algorithm(local_manifest, args.algorithm, args.channels)
        check_hyperparameters(args.algorithm, {
            **default_hyperparameters(args.algorithm, local_manifest), **hyperparameters})
    channels, manifest = channel_uris(args.channels, args.algorithm, job_name, args.s3_prefix)
    resolved = {**default_hyperparameters(args.algorithm, manifest), **hyperparameters}
    check_hyperparameters(args.algorithm, resolved)
    summary = run_training_job(
        job_name=job_name, image_uri=image_uri, role_arn=role_arn, channels=channels,
        output_path=args.out, hyperparameters=resolved, algorithm=args.algorithm,
        metrics=metric_definitions(args.algorithm), args=args, wait=args.wait)
    if args.wait:
        summary["estimated_cost_usd"] = estimate_training_cost(
            args.instance_type, args.instance_count, summary.get("billable_seconds"))
        write_remote_metrics(summary, join_s3_uri(args.out, job_name, "output", "metrics.json"))
    return summary


def write_remote_metrics(summary: dict[str, Any], uri: str) -> None:
    """Put metrics.json beside the job's model.tar.gz in S3."""
    with tempfile.TemporaryDirectory(prefix="review-nlp-metrics-") as scratch:
        path = Path(scratch) / "metrics.json"
        path.write_text(json.dumps({"final": summary.get("metrics", {}), "job": summary},
                                   indent=2, default=str))
        upload_file(path, uri)
    logger.info("Wrote %s", uri)


def deploy_on_sagemaker(args: argparse.Namespace) -> dict[str, Any]:
    image_uri = _require(args.image_uri, "--image-uri")
    if not is_s3_uri(args.model):
        raise UserError(f"--model {args.model} must be the s3:// URI of a model.tar.gz with "
                        f"--mode sagemaker")
    description = deploy_endpoint(args.model, image_uri, resolve_role_arn(args.role),
                                  args.instance_type, args.instance_count, args.endpoint_name)
    print(f"endpoint {args.endpoint_name}: {description.get('EndpointStatus')}")
    return description


def compare_on_sagemaker(args: argparse.Namespace, hyperparameters: dict[str, str]
                         ) -> dict[str, Any]:
    """Train the built-in and our image on the same channels; one row per job."""
    image_uri = _require(args.image_uri, "--image-uri")
    prefix = _require(args.s3_prefix, "--s3-prefix (for uploads and job outputs)")
    role_arn = resolve_role_arn(args.role)
    region = aws_client("sagemaker").meta.region_name
    ours_name = make_job_name(f"review-nlp-{args.algorithm}")
    channels, manifest = channel_uris(args.channels, args.algorithm, ours_name, prefix)
    resolved = {**default_hyperparameters(args.algorithm, manifest), **hyperparameters}
    output_path = join_s3_uri(prefix, "jobs")
    args.instance_count = 1

    rows = []
    built_in_name = make_job_name(f"builtin-{args.algorithm}")
    built_in_channels = built_in_channel_uris(args.algorithm, channels)
    jobs = [
        ("built-in " + args.algorithm, built_in_name, built_in_image_uri(args.algorithm, region),
         built_in_hyperparameters(args.algorithm, resolved), None, built_in_channels),
        ("review_nlp " + args.algorithm, ours_name, image_uri, resolved, args.algorithm, channels),
    ]
    for label, name, image, job_hyperparameters, algorithm, job_channels in jobs:
        summary = run_training_job(
            job_name=name, image_uri=image, role_arn=role_arn, channels=job_channels,
            output_path=output_path, hyperparameters=job_hyperparameters, algorithm=algorithm,
            metrics=metric_definitions(args.algorithm) if algorithm else [], args=args)
        cost = estimate_training_cost(args.instance_type, 1, summary.get("billable_seconds"))
        rows.append({"model": label, "job": name, **summary.get("metrics", {}),
                     "training_seconds": summary.get("training_seconds"),
                     "billable_seconds": summary.get("billable_seconds"),
                     "cost_usd": cost})
    columns = ["model"] + sorted({k for row in rows for k in row} - {"model", "job"}) + ["job"]
    return {"algorithm": args.algorithm, "channels": args.channels, "test_channel": "test",
            "rows": rows, "columns": columns, "plots": {},
            "notes": [f"cost: {PRICE_SOURCE}"]}
