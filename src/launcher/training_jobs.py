"""SageMaker training jobs through boto3: build the request, start, wait, stream logs, summarize.

`build_training_job_request` makes no AWS call, so tests and a dry run can show the exact
CreateTrainingJob request. Limits quoted below come from botocore's SageMaker service model
(botocore 1.44.8).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence, TextIO

from botocore.client import BaseClient
from botocore.exceptions import ClientError

from ..errors import UserError
from .aws import aws_client, is_throttling_error
from .s3_uploads import join_s3_uri, parse_s3_uri

logger = logging.getLogger(__name__)

RECORDIO_PROTOBUF = "application/x-recordio-protobuf"
DEFAULT_CONTENT_TYPES = {
    "train": RECORDIO_PROTOBUF,
    "validation": RECORDIO_PROTOBUF,
    "test": RECORDIO_PROTOBUF,
    "auxiliary": "text/plain",
}
CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
LOG_GROUP = "/aws/sagemaker/TrainingJobs"
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Stopped"})
INPUT_MODES = ("File", "Pipe", "FastFile")

MAX_JOB_NAME_LENGTH = 63
MAX_HYPERPARAMETERS = 100
MAX_HYPERPARAMETER_KEY_LENGTH = 256
MAX_HYPERPARAMETER_VALUE_LENGTH = 2500
MAX_METRIC_DEFINITIONS = 40
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_TIMESTAMP_LENGTH = len("2024-01-31-23-59-59-999")


class TrainingJobFailed(RuntimeError):
    """A training job ended in Failed; `failure_reason` is SageMaker's FailureReason."""

    def __init__(self, job_name: str, failure_reason: str, description: Mapping[str, Any]):
        self.job_name = job_name
        self.failure_reason = failure_reason
        self.description = description
        super().__init__(f"training job {job_name} failed: {failure_reason}")


@dataclass(frozen=True)
class Channel:
    """One input channel: an S3 prefix (or manifest) with optional overrides.

    `content_type` defaults by channel name: RecordIO-protobuf for train, validation and test,
    and text/plain for auxiliary. `distribution` defaults to ShardedByS3Key for `train` on
    more than one instance, and to FullyReplicated otherwise.
    """

    s3_uri: str
    content_type: str | None = None
    distribution: str | None = None
    s3_data_type: str = "S3Prefix"


@dataclass
class TrainingJobSummary:
    """The outcome of one training job, as DescribeTrainingJob reports it."""

    job_name: str
    status: str
    secondary_status: str | None
    failure_reason: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    billable_seconds: int | None = None
    training_seconds: int | None = None
    instance_type: str | None = None
    instance_count: int | None = None
    managed_spot: bool = False
    model_artifact: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_job_name(prefix: str, now: datetime | None = None) -> str:
    """Return `<prefix>-<YYYY-MM-DD-HH-MM-SS-mmm>`, a valid and unique-per-millisecond job name.

    Characters SageMaker rejects become "-", and the prefix is cut so the name fits 63 characters.
    """
    now = now or datetime.now(timezone.utc)
    stamp = now.strftime("%Y-%m-%d-%H-%M-%S-") + f"{now.microsecond // 1000:03d}"
    cleaned = re.sub(r"[^a-zA-Z0-9]+", "-", prefix).strip("-")
    cleaned = cleaned[:MAX_JOB_NAME_LENGTH - _TIMESTAMP_LENGTH - 1].rstrip("-")
    return f"{cleaned}-{stamp}" if cleaned else stamp


def hyperparameter_strings(hyperparameters: Mapping[str, Any]) -> dict[str, str]:
    """Encode hyperparameter values as the strings CreateTrainingJob requires.

    Strings pass unchanged, booleans become "true"/"false", lists, tuples and dicts become
    JSON (`[100, 50]`), other values go through `str()`, and None values are left out so
    the algorithm's default applies.
    """
    encoded = {}
    for name, value in hyperparameters.items():
        if value is None:
            continue
        if isinstance(value, str):
            text = value
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (list, tuple, dict)):
            text = json.dumps(value)
        else:
            text = str(value)
        _check_hyperparameter(str(name), text)
        encoded[str(name)] = text
    if len(encoded) > MAX_HYPERPARAMETERS:
        raise UserError(
            f"{len(encoded)} hyperparameters given; SageMaker accepts at most "
            f"{MAX_HYPERPARAMETERS}")
    return encoded


def build_training_job_request(
    *,
    job_name: str,
    image_uri: str,
    role_arn: str,
    channels: Mapping[str, str | Channel],
    output_path: str,
    instance_type: str,
    instance_count: int = 1,
    volume_size_gb: int = 30,
    hyperparameters: Mapping[str, Any] | None = None,
    algorithm: str | None = None,
    metric_definitions: Sequence[Mapping[str, str]] = (),
    input_mode: str = "File",
    max_runtime_seconds: int = 24 * 3600,
    use_spot: bool = False,
    max_wait_seconds: int | None = None,
    checkpoint_s3_uri: str | None = None,
    environment: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Build the keyword arguments of SageMaker CreateTrainingJob; makes no AWS call.

    `algorithm` is added to the hyperparameters as `algorithm` (our container reads it); leave
    it None for a built-in algorithm, which has no such hyperparameter. With `use_spot`,
    `max_wait_seconds` is required and must be at least `max_runtime_seconds`. When our own
    algorithm runs on spot without `checkpoint_s3_uri`, checkpoints go to
    `<output_path>/<job_name>/checkpoints/`, so an interrupted job resumes from them. Raises
    `UserError` naming the first invalid argument.
    """
    _check_job_settings(job_name, image_uri, instance_count, volume_size_gb, max_runtime_seconds,
                        input_mode)
    parse_s3_uri(output_path)
    hyperparameters = dict(hyperparameters or {})
    if algorithm is not None:
        if hyperparameters.get("algorithm", algorithm) != algorithm:
            raise UserError(
                f"hyperparameter algorithm={hyperparameters['algorithm']!r} does not match "
                f"algorithm={algorithm!r}")
        hyperparameters["algorithm"] = algorithm

    algorithm_specification: dict[str, Any] = {
        "TrainingImage": image_uri,
        "TrainingInputMode": input_mode,
    }
    if metric_definitions:
        algorithm_specification["MetricDefinitions"] = _metric_definitions(metric_definitions)

    request: dict[str, Any] = {
        "TrainingJobName": job_name,
        "AlgorithmSpecification": algorithm_specification,
        "RoleArn": role_arn,
        "HyperParameters": hyperparameter_strings(hyperparameters),
        "InputDataConfig": _input_data_config(channels, instance_count),
        "OutputDataConfig": {"S3OutputPath": output_path},
        "ResourceConfig": {
            "InstanceType": instance_type,
            "InstanceCount": instance_count,
            "VolumeSizeInGB": volume_size_gb,
        },
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_seconds},
    }

    # managed spot: a wait limit and, for our container, a checkpoint folder to resume from
    if use_spot:
        request["EnableManagedSpotTraining"] = True
        request["StoppingCondition"]["MaxWaitTimeInSeconds"] = _spot_wait(
            max_wait_seconds, max_runtime_seconds)
        if checkpoint_s3_uri is None and algorithm is not None:
            checkpoint_s3_uri = join_s3_uri(output_path, job_name, "checkpoints") + "/"
            logger.info("spot training: checkpoints go to %s", checkpoint_s3_uri)
    elif max_wait_seconds is not None:
        raise UserError(f"max_wait_seconds={max_wait_seconds} is only valid with spot training")
    if checkpoint_s3_uri is not None:
        parse_s3_uri(checkpoint_s3_uri)
        request["CheckpointConfig"] = {"S3Uri": checkpoint_s3_uri,
                                       "LocalPath": CHECKPOINT_LOCAL_PATH}

    if environment:
        request["Environment"] = {str(key): str(value) for key, value in environment.items()}
    if tags:
        request["Tags"] = [{"Key": key, "Value": value} for key, value in tags.items()]
    return request


def start_training_job(request: Mapping[str, Any], *, client: BaseClient | None = None) -> str:
    """Send a CreateTrainingJob request (from `build_training_job_request`); return the job ARN."""
    client = client or aws_client("sagemaker")
    arn = client.create_training_job(**request)["TrainingJobArn"]
    region = client.meta.region_name
    logger.info(
        "started training job %s; console: https://%s.console.aws.amazon.com/sagemaker/home"
        "?region=%s#/jobs/%s", request["TrainingJobName"], region, region,
        request["TrainingJobName"])
    return arn


def wait_for_training_job(job_name: str, *, poll_seconds: float = 30.0,
                          timeout_seconds: float | None = None,
                          client: BaseClient | None = None,
                          progress: TextIO | None = None) -> dict[str, Any]:
    """Poll DescribeTrainingJob until the job is Completed, Failed or Stopped.

    A progress line (status, secondary status, time since the job was created) goes to
    `progress` (default stderr): rewritten in place on a terminal, otherwise a new line each
    time the status changes. Throttled polls are logged and retried at the next interval.
    Returns the final description. Raises `TrainingJobFailed` carrying FailureReason when the
    job failed, and `TimeoutError` after `timeout_seconds` (the job itself keeps running).
    """
    client = client or aws_client("sagemaker")
    progress = progress or sys.stderr
    started = time.monotonic()
    last_line = None
    while True:
        description = _describe_or_none(client, job_name)
        if description is not None:
            last_line = _report_progress(progress, job_name, description, last_line, started)
            status = description["TrainingJobStatus"]
            if status in TERMINAL_STATUSES:
                _end_progress(progress)
                return _finished(job_name, description)

        if timeout_seconds is not None and time.monotonic() - started > timeout_seconds:
            _end_progress(progress)
            raise TimeoutError(
                f"training job {job_name} still running after {timeout_seconds:.0f} s; "
                f"it keeps running on SageMaker")
        time.sleep(poll_seconds)


def stream_training_logs(job_name: str, *, follow: bool = True, poll_seconds: float = 10.0,
                         logs_client: BaseClient | None = None,
                         sagemaker_client: BaseClient | None = None,
                         out: TextIO | None = None, page_size: int | None = None) -> int:
    """Print the job's CloudWatch log lines, each prefixed with its log stream's host part.

    Reads every stream of the `/aws/sagemaker/TrainingJobs` group whose name starts with
    `<job_name>/` (one per host, e.g. `algo-1-1700000000`), paging with the forward token.
    With `follow`, keeps polling every `poll_seconds` until the job reaches a terminal status,
    then prints what remains. Returns the number of lines printed.
    """
    logs_client = logs_client or aws_client("logs")
    if follow:
        sagemaker_client = sagemaker_client or aws_client("sagemaker")
    out = out or sys.stdout
    tokens: dict[str, str | None] = {}
    printed = 0
    while True:
        # read the status before the logs, so lines written just before the end are not missed
        status = None
        if follow:
            description = _describe_or_none(sagemaker_client, job_name)
            status = description["TrainingJobStatus"] if description else None

        printed += _print_new_events(logs_client, job_name, tokens, out, page_size)
        if not follow or status in TERMINAL_STATUSES:
            return printed
        time.sleep(poll_seconds)


def training_job_summary(job: str | Mapping[str, Any], *,
                         client: BaseClient | None = None) -> TrainingJobSummary:
    """Summarize a job from its description, or from its name (one DescribeTrainingJob call).

    `metrics` maps each FinalMetricDataList name to its final value. Billable seconds are per
    instance: SageMaker bills `billable_seconds * instance_count` instance-seconds.
    """
    if isinstance(job, str):
        job = (client or aws_client("sagemaker")).describe_training_job(TrainingJobName=job)
    resources = job.get("ResourceConfig", {})
    return TrainingJobSummary(
        job_name=job["TrainingJobName"],
        status=job["TrainingJobStatus"],
        secondary_status=job.get("SecondaryStatus"),
        failure_reason=job.get("FailureReason"),
        metrics={item["MetricName"]: item["Value"] for item in job.get("FinalMetricDataList", [])},
        billable_seconds=job.get("BillableTimeInSeconds"),
        training_seconds=job.get("TrainingTimeInSeconds"),
        instance_type=resources.get("InstanceType"),
        instance_count=resources.get("InstanceCount"),
        managed_spot=bool(job.get("EnableManagedSpotTraining", False)),
        model_artifact=job.get("ModelArtifacts", {}).get("S3ModelArtifacts"),
    )


def _check_job_settings(job_name: str, image_uri: str, instance_count: int, volume_size_gb: int,
                        max_runtime_seconds: int, input_mode: str) -> None:
    if not _JOB_NAME.match(job_name):
        raise UserError(
            f"job_name={job_name!r} must be 1 to 63 letters, digits and hyphens, starting and "
            f"ending with a letter or digit")
    if not image_uri:
        raise UserError("image_uri is empty; give the ECR URI of the training image")
    for name, value in (("instance_count", instance_count), ("volume_size_gb", volume_size_gb),
                        ("max_runtime_seconds", max_runtime_seconds)):
        if value < 1:
            raise UserError(f"{name}={value} must be at least 1")
    if input_mode not in INPUT_MODES:
        raise UserError(f"input_mode={input_mode!r} must be one of {list(INPUT_MODES)}")


def _check_hyperparameter(name: str, text: str) -> None:
    if not name or len(name) > MAX_HYPERPARAMETER_KEY_LENGTH:
        raise UserError(
            f"hyperparameter name {name[:40]!r} must be 1 to {MAX_HYPERPARAMETER_KEY_LENGTH} "
            f"characters")
    if len(text) > MAX_HYPERPARAMETER_VALUE_LENGTH:
        raise UserError(
            f"hyperparameter {name} is {len(text)} characters as a string; SageMaker accepts at "
            f"most {MAX_HYPERPARAMETER_VALUE_LENGTH}")


def _metric_definitions(definitions: Sequence[Mapping[str, str]]) -> list[dict[str, str]]:
    if len(definitions) > MAX_METRIC_DEFINITIONS:
        raise UserError(
            f"{len(definitions)} metric definitions given; SageMaker accepts at most "
            f"{MAX_METRIC_DEFINITIONS}")
    checked = []
    for definition in definitions:
        if not definition.get("Name") or not definition.get("Regex"):
            raise UserError(f"metric definition {dict(definition)} needs a Name and a Regex")
        checked.append({"Name": definition["Name"], "Regex": definition["Regex"]})
    return checked


def _input_data_config(channels: Mapping[str, str | Channel],
                       instance_count: int) -> list[dict[str, Any]]:
    if "train" not in channels:
        raise UserError(f"channels {sorted(channels)} have no 'train' channel")
    config = []
    for name, channel in channels.items():
        if isinstance(channel, str):
            channel = Channel(channel)
        parse_s3_uri(channel.s3_uri)
        entry: dict[str, Any] = {
            "ChannelName": name,
            "DataSource": {"S3DataSource": {
                "S3DataType": channel.s3_data_type,
                "S3Uri": channel.s3_uri,
                "S3DataDistributionType": _distribution(name, channel, instance_count),
            }},
        }
        content_type = channel.content_type or DEFAULT_CONTENT_TYPES.get(name)
        if content_type:
            entry["ContentType"] = content_type
        config.append(entry)
    return config


def _distribution(name: str, channel: Channel, instance_count: int) -> str:
    # Each host reads its own share of the train files. The other channels go whole to every
    # host, as the built-in NTM and k-means require for their optional channels.
    if name != "train":
        if channel.distribution not in (None, "FullyReplicated"):
            raise UserError(
                f"channel {name} distribution={channel.distribution!r} must be FullyReplicated; "
                f"only train may be sharded")
        return "FullyReplicated"
    if channel.distribution is not None:
        if channel.distribution not in ("FullyReplicated", "ShardedByS3Key"):
            raise UserError(
                f"channel train distribution={channel.distribution!r} must be FullyReplicated "
                f"or ShardedByS3Key")
        return channel.distribution
    return "ShardedByS3Key" if instance_count > 1 else "FullyReplicated"


def _spot_wait(max_wait_seconds: int | None, max_runtime_seconds: int) -> int:
    # The API requires MaxWaitTimeInSeconds >= MaxRuntimeInSeconds, because the wait limit
    # covers the time spent waiting for spot capacity plus the run itself.
    if max_wait_seconds is None:
        raise UserError("spot training needs max_wait_seconds (waiting time plus run time)")
    if max_wait_seconds < max_runtime_seconds:
        raise UserError(
            f"max_wait_seconds={max_wait_seconds} must be at least "
            f"max_runtime_seconds={max_runtime_seconds}")
    return max_wait_seconds


def _describe_or_none(client: BaseClient, job_name: str) -> dict[str, Any] | None:
    """DescribeTrainingJob, or None when the call was throttled past botocore's retries."""
    try:
        return client.describe_training_job(TrainingJobName=job_name)
    except ClientError as error:
        if not is_throttling_error(error):
            raise
        logger.warning("DescribeTrainingJob %s throttled; polling again later: %s", job_name, error)
        return None


def _finished(job_name: str, description: dict[str, Any]) -> dict[str, Any]:
    status = description["TrainingJobStatus"]
    if status == "Failed":
        raise TrainingJobFailed(job_name, description.get("FailureReason", "(no reason given)"),
                                description)
    if status == "Stopped":
        logger.warning("training job %s was stopped (secondary status %s)",
                       job_name, description.get("SecondaryStatus"))
    return description


def _report_progress(progress: TextIO, job_name: str, description: Mapping[str, Any],
                     last_line: str | None, started: float) -> str:
    state = f"{job_name}: {description['TrainingJobStatus']} / {description.get('SecondaryStatus')}"
    created = description.get("CreationTime")
    if isinstance(created, datetime):
        ended = description.get("TrainingEndTime") or datetime.now(timezone.utc)
        seconds = (ended - created).total_seconds()
    else:
        seconds = time.monotonic() - started
    line = f"{state}, {timedelta(seconds=max(0, int(seconds)))} elapsed"
    if _is_terminal(progress):
        progress.write("\r" + line.ljust(len(last_line or "")))
    elif last_line is None or not last_line.startswith(state + ","):
        progress.write(line + "\n")
    progress.flush()
    return line


def _end_progress(progress: TextIO) -> None:
    if _is_terminal(progress):
        progress.write("\n")
        progress.flush()


def _is_terminal(stream: TextIO) -> bool:
    return hasattr(stream, "isatty") and stream.isatty()


def _print_new_events(client: BaseClient, job_name: str, tokens: dict[str, str | None],
                      out: TextIO, page_size: int | None) -> int:
    for stream in _log_streams(client, job_name):
        tokens.setdefault(stream, None)
    printed = 0
    for stream in sorted(tokens):
        host = stream[len(job_name) + 1:]
        while True:
            request: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamName": stream,
                                       "startFromHead": True}
            if tokens[stream]:
                request["nextToken"] = tokens[stream]
            if page_size:
                request["limit"] = page_size
            response = client.get_log_events(**request)
            for event in response["events"]:
                out.write(f"[{host}] {event['message'].rstrip()}\n")
            printed += len(response["events"])

            # CloudWatch returns the token it was given once the stream has no newer events
            next_token = response["nextForwardToken"]
            reached_end = next_token == tokens[stream]
            tokens[stream] = next_token
            if reached_end:
                break
    out.flush()
    return printed


def _log_streams(client: BaseClient, job_name: str) -> list[str]:
    paginator = client.get_paginator("describe_log_streams")
    try:
        return [stream["logStreamName"]
                for page in paginator.paginate(logGroupName=LOG_GROUP,
                                               logStreamNamePrefix=f"{job_name}/")
                for stream in page["logStreams"]]
    except ClientError as error:
        # the log group does not exist before the first training job of the account and region
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return []
        if is_throttling_error(error):
            logger.warning("DescribeLogStreams for %s throttled; reading logs later", job_name)
            return []
        raise
