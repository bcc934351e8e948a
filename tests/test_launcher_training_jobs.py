"""SageMaker training jobs: the request, moto round trips, waiting, logs and summaries."""

from __future__ import annotations

import io
import re
import time
from datetime import datetime, timezone

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber
from launcher_moto import (  # noqa: F401
    BUCKET,
    ROLE_ARN,
    RequestRecorder,
    client_for,
    moto_endpoint,
    moto_server_url,
    shared_session,
    training_job_description,
)

from review_nlp.errors import UserError
from review_nlp.launcher import training_jobs
from review_nlp.launcher.aws import aws_client
from review_nlp.launcher.training_jobs import Channel, TrainingJobFailed

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/review-nlp:latest"
METRICS = [
    {"Name": "train:total_loss", "Regex": r"train total_loss <loss>=(\S+)"},
    {"Name": "validation:total_loss", "Regex": r"validation total_loss <loss>=(\S+)"},
]
CHANNELS = {
    "train": f"s3://{BUCKET}/runs/job/channels/train/",
    "validation": f"s3://{BUCKET}/runs/job/channels/validation/",
    "test": f"s3://{BUCKET}/runs/job/channels/test/",
    "auxiliary": f"s3://{BUCKET}/runs/job/channels/auxiliary/",
}
RECORDIO = "application/x-recordio-protobuf"


def _request(**overrides):
    arguments = dict(
        job_name="review-nlp-ntm-2024-01-31-23-59-59-123",
        image_uri=IMAGE,
        role_arn=ROLE_ARN,
        channels=CHANNELS,
        output_path=f"s3://{BUCKET}/runs/output/",
        instance_type="ml.c5.xlarge",
        instance_count=2,
        hyperparameters={"num_topics": 20, "feature_dim": 2000, "batch_norm": False,
                         "encoder_layers": [100, 50], "learning_rate": 0.01,
                         "optimizer": "adadelta", "prior": None},
        algorithm="ntm",
        metric_definitions=METRICS,
        max_runtime_seconds=3600,
        use_spot=True,
        max_wait_seconds=7200,
    )
    arguments.update(overrides)
    return training_jobs.build_training_job_request(**arguments)


def _channel(name, uri, content_type, distribution):
    return {
        "ChannelName": name,
        "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": uri,
                                        "S3DataDistributionType": distribution}},
        "ContentType": content_type,
    }


# --- job names -------------------------------------------------------------------------------

def test_job_name_format():
    name = training_jobs.make_job_name("review-nlp-ntm",
                                       datetime(2024, 1, 31, 23, 59, 59, 123456, timezone.utc))

    assert name == "review-nlp-ntm-2024-01-31-23-59-59-123"


@pytest.mark.parametrize("prefix", ["x" * 100, "review_nlp ntm/run", "--", "ÄÖ-ntm", ""])
def test_job_name_always_valid(prefix):
    name = training_jobs.make_job_name(prefix)

    assert len(name) <= 63
    assert re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", name)


def test_job_names_differ_over_time():
    first = training_jobs.make_job_name("ntm")
    time.sleep(0.002)

    assert training_jobs.make_job_name("ntm") != first


# --- hyperparameters -------------------------------------------------------------------------

def test_hyperparameter_strings():
    encoded = training_jobs.hyperparameter_strings({
        "num_topics": 20, "learning_rate": 0.001, "batch_norm": True, "flag": False,
        "encoder_layers": [100, 50], "eval_metrics": ("msd", "ssd"), "optimizer": "adam",
        "prior": None, "clip_gradient": float("inf"),
    })

    assert encoded == {
        "num_topics": "20", "learning_rate": "0.001", "batch_norm": "true", "flag": "false",
        "encoder_layers": "[100, 50]", "eval_metrics": '["msd", "ssd"]', "optimizer": "adam",
        "clip_gradient": "inf",
    }
    assert all(isinstance(value, str) for value in encoded.values())


def test_hyperparameter_value_too_long():
    with pytest.raises(UserError, match="at most 2500"):
        training_jobs.hyperparameter_strings({"stop_words": "x" * 2501})


def test_too_many_hyperparameters():
    with pytest.raises(UserError, match="at most 100"):
        training_jobs.hyperparameter_strings({f"h{i}": i for i in range(101)})


# --- the request -----------------------------------------------------------------------------

def test_request_spot_multi_instance():
    request = _request()

    assert request == {
        "TrainingJobName": "review-nlp-ntm-2024-01-31-23-59-59-123",
        "AlgorithmSpecification": {"TrainingImage": IMAGE, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRICS},
        "RoleArn": ROLE_ARN,
        "HyperParameters": {"num_topics": "20", "feature_dim": "2000", "batch_norm": "false",
                            "encoder_layers": "[100, 50]", "learning_rate": "0.01",
                            "optimizer": "adadelta", "algorithm": "ntm"},
        "InputDataConfig": [
            _channel("train", CHANNELS["train"], RECORDIO, "ShardedByS3Key"),
            _channel("validation", CHANNELS["validation"], RECORDIO, "FullyReplicated"),
            _channel("test", CHANNELS["test"], RECORDIO, "FullyReplicated"),
            _channel("auxiliary", CHANNELS["auxiliary"], "text/plain", "FullyReplicated"),
        ],
        "OutputDataConfig": {"S3OutputPath": f"s3://{BUCKET}/runs/output/"},
        "ResourceConfig": {"InstanceType": "ml.c5.xlarge", "InstanceCount": 2,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600, "MaxWaitTimeInSeconds": 7200},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {
            "S3Uri": f"s3://{BUCKET}/runs/output/{request['TrainingJobName']}/checkpoints/",
            "LocalPath": "/opt/ml/checkpoints",
        },
    }


def test_request_single_instance_on_demand():
    request = _request(instance_count=1, use_spot=False, max_wait_seconds=None)

    distributions = {channel["ChannelName"]: channel["DataSource"]["S3DataSource"]
                     ["S3DataDistributionType"] for channel in request["InputDataConfig"]}
    assert set(distributions.values()) == {"FullyReplicated"}
    assert "EnableManagedSpotTraining" not in request
    assert "CheckpointConfig" not in request
    assert request["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600}


def test_request_channel_overrides():
    request = _request(channels={
        "train": Channel(CHANNELS["train"], content_type="text/csv;label_size=0",
                         distribution="FullyReplicated"),
        "extra": f"s3://{BUCKET}/extra/",
    })

    train, extra = request["InputDataConfig"]
    assert train["ContentType"] == "text/csv;label_size=0"
    assert train["DataSource"]["S3DataSource"]["S3DataDistributionType"] == "FullyReplicated"
    assert "ContentType" not in extra


def test_request_explicit_checkpoint_and_environment():
    request = _request(checkpoint_s3_uri=f"s3://{BUCKET}/ckpt/", environment={"SEED": 7},
                       tags={"project": "review-nlp"})

    assert request["CheckpointConfig"] == {"S3Uri": f"s3://{BUCKET}/ckpt/",
                                           "LocalPath": "/opt/ml/checkpoints"}
    assert request["Environment"] == {"SEED": "7"}
    assert request["Tags"] == [{"Key": "project", "Value": "review-nlp"}]


def test_request_for_built_in_has_no_algorithm():
    request = _request(algorithm=None, metric_definitions=(),
                       hyperparameters={"num_topics": "20", "feature_dim": "2000"})

    assert "algorithm" not in request["HyperParameters"]
    assert "MetricDefinitions" not in request["AlgorithmSpecification"]
    assert "CheckpointConfig" not in request


@pytest.mark.parametrize("overrides, message", [
    ({"max_wait_seconds": None}, "needs max_wait_seconds"),
    ({"max_wait_seconds": 3599}, "max_wait_seconds=3599 must be at least"),
    ({"use_spot": False}, "only valid with spot"),
    ({"job_name": "bad_name"}, "job_name="),
    ({"job_name": "x" * 64}, "job_name="),
    ({"instance_count": 0}, "instance_count=0"),
    ({"input_mode": "Stream"}, "input_mode="),
    ({"image_uri": ""}, "image_uri"),
    ({"output_path": "/local/out"}, "s3://"),
    ({"channels": {"validation": CHANNELS["validation"]}}, "no 'train' channel"),
    ({"channels": {**CHANNELS, "validation": Channel(CHANNELS["validation"],
                                                      distribution="ShardedByS3Key")}},
     "only train may be sharded"),
    ({"channels": {"train": Channel(CHANNELS["train"], distribution="Random")}}, "train"),
    ({"hyperparameters": {"algorithm": "kmeans"}}, "does not match"),
    ({"metric_definitions": [{"Name": "x"}]}, "needs a Name and a Regex"),
    ({"metric_definitions": [{"Name": f"m{i}", "Regex": "(.*)"} for i in range(41)]},
     "at most 40"),
])
def test_request_rejects(overrides, message):
    with pytest.raises(UserError, match=re.escape(message)):
        _request(**overrides)


def test_max_wait_equal_to_runtime_allowed():
    assert _request(max_wait_seconds=3600)["StoppingCondition"]["MaxWaitTimeInSeconds"] == 3600


# --- against moto ----------------------------------------------------------------------------

@pytest.fixture
def sagemaker(client_for):
    return client_for("sagemaker")


def test_start_stores_exact_request(sagemaker):
    recorder = RequestRecorder(sagemaker)
    request = _request()

    arn = training_jobs.start_training_job(request, client=sagemaker)
    stored = sagemaker.describe_training_job(TrainingJobName=request["TrainingJobName"])

    assert arn.endswith(":training-job/" + request["TrainingJobName"])
    assert stored["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert stored["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    assert stored["HyperParameters"] == request["HyperParameters"]
    assert all(isinstance(value, str) for value in stored["HyperParameters"].values())
    assert stored["HyperParameters"]["algorithm"] == "ntm"
    assert stored["InputDataConfig"] == request["InputDataConfig"]
    assert stored["OutputDataConfig"] == {"S3OutputPath": f"s3://{BUCKET}/runs/output/"}
    assert stored["ResourceConfig"] == request["ResourceConfig"]
    assert stored["StoppingCondition"] == {"MaxRuntimeInSeconds": 3600,
                                           "MaxWaitTimeInSeconds": 7200}
    assert stored["EnableManagedSpotTraining"] is True
    assert stored["CheckpointConfig"] == request["CheckpointConfig"]
    assert stored["RoleArn"] == ROLE_ARN

    # moto stores MetricDefinitions but describes a fixed list, so check what went on the wire
    sent = recorder.json_bodies("CreateTrainingJob")
    assert len(sent) == 1
    assert sent[0]["AlgorithmSpecification"]["MetricDefinitions"] == METRICS
    assert sent[0] == request


def test_start_with_default_client(moto_endpoint):
    request = _request(use_spot=False, max_wait_seconds=None)

    training_jobs.start_training_job(request)

    assert boto3.client("sagemaker").describe_training_job(
        TrainingJobName=request["TrainingJobName"])["TrainingJobStatus"] == "Completed"


def test_wait_returns_completed_description(sagemaker):
    request = _request()
    training_jobs.start_training_job(request, client=sagemaker)
    progress = io.StringIO()

    description = training_jobs.wait_for_training_job(
        request["TrainingJobName"], poll_seconds=0, client=sagemaker, progress=progress)

    assert description["TrainingJobStatus"] == "Completed"
    assert progress.getvalue().startswith(f"{request['TrainingJobName']}: Completed / Completed, ")
    assert progress.getvalue().endswith(" elapsed\n")


def test_summary_from_moto(sagemaker):
    request = _request()
    training_jobs.start_training_job(request, client=sagemaker)

    summary = training_jobs.training_job_summary(request["TrainingJobName"], client=sagemaker)

    assert summary.status == "Completed"
    assert summary.instance_type == "ml.c5.xlarge"
    assert summary.instance_count == 2
    assert summary.managed_spot is True
    assert summary.model_artifact == (
        f"s3://{BUCKET}/runs/output/{request['TrainingJobName']}/output/model.tar.gz")
    assert summary.metrics == {"train:progress": 100.0}


# --- waiting, through Stubber ----------------------------------------------------------------

@pytest.fixture
def stubbed(shared_session):
    client = aws_client("sagemaker", session=shared_session)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _expect_describe(stubber, job_name="review-nlp-ntm-1", **description):
    stubber.add_response("describe_training_job",
                         training_job_description(job_name, **description),
                         {"TrainingJobName": job_name})


def test_wait_reports_each_status_change(stubbed):
    client, stubber = stubbed
    _expect_describe(stubber, status="InProgress", secondary="Starting")
    _expect_describe(stubber, status="InProgress", secondary="Starting")
    _expect_describe(stubber, status="InProgress", secondary="Training")
    _expect_describe(stubber, status="Completed", secondary="Completed",
                     BillableTimeInSeconds=100)
    progress = io.StringIO()

    description = training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0,
                                                       client=client, progress=progress)

    lines = progress.getvalue().splitlines()
    assert [line.split(",")[0] for line in lines] == [
        "review-nlp-ntm-1: InProgress / Starting",
        "review-nlp-ntm-1: InProgress / Training",
        "review-nlp-ntm-1: Completed / Completed",
    ]
    assert all(re.search(r", \d+:\d\d:\d\d elapsed$", line) for line in lines)
    assert description["BillableTimeInSeconds"] == 100


def test_wait_rewrites_line_on_terminal(stubbed):
    client, stubber = stubbed
    _expect_describe(stubber, status="InProgress", secondary="Training")
    _expect_describe(stubber, status="Completed", secondary="Completed")

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    progress = Terminal()
    training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0, client=client,
                                        progress=progress)

    assert progress.getvalue().count("\r") == 2
    assert progress.getvalue().endswith("\n")


def test_wait_raises_failure_reason(stubbed):
    client, stubber = stubbed
    _expect_describe(stubber, status="InProgress", secondary="Training")
    _expect_describe(stubber, status="Failed", secondary="Failed",
                     FailureReason="AlgorithmError: num_topics=1 must be in [2, 1000]")

    with pytest.raises(TrainingJobFailed) as raised:
        training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0, client=client,
                                            progress=io.StringIO())

    assert raised.value.failure_reason == "AlgorithmError: num_topics=1 must be in [2, 1000]"
    assert "num_topics=1 must be in [2, 1000]" in str(raised.value)
    assert raised.value.description["TrainingJobStatus"] == "Failed"


def test_wait_survives_throttled_poll(stubbed, caplog):
    client, stubber = stubbed
    stubber.add_client_error("describe_training_job", service_error_code="ThrottlingException",
                             service_message="Rate exceeded", http_status_code=400)
    _expect_describe(stubber, status="Completed", secondary="Completed")

    description = training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0,
                                                      client=client, progress=io.StringIO())

    assert description["TrainingJobStatus"] == "Completed"
    assert "throttled" in caplog.text


def test_wait_raises_other_client_errors(stubbed):
    client, stubber = stubbed
    stubber.add_client_error("describe_training_job", service_error_code="ValidationException",
                             service_message="Requested resource not found.")

    with pytest.raises(ClientError, match="not found"):
        training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0, client=client,
                                            progress=io.StringIO())


def test_wait_returns_stopped(stubbed, caplog):
    client, stubber = stubbed
    _expect_describe(stubber, status="Stopped", secondary="MaxWaitTimeExceeded")

    description = training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0,
                                                      client=client, progress=io.StringIO())

    assert description["SecondaryStatus"] == "MaxWaitTimeExceeded"
    assert "was stopped" in caplog.text


def test_wait_times_out(stubbed):
    client, stubber = stubbed
    _expect_describe(stubber, status="InProgress", secondary="Training")
    _expect_describe(stubber, status="InProgress", secondary="Training")

    with pytest.raises(TimeoutError, match="keeps running"):
        training_jobs.wait_for_training_job("review-nlp-ntm-1", poll_seconds=0.05,
                                            timeout_seconds=0.01, client=client,
                                            progress=io.StringIO())


def test_summary_from_description():
    description = training_job_description(
        status="Completed", secondary="Completed", BillableTimeInSeconds=120,
        TrainingTimeInSeconds=400, EnableManagedSpotTraining=True,
        FinalMetricDataList=[
            {"MetricName": "validation:total_loss", "Value": 6.65,
             "Timestamp": datetime.now(timezone.utc)},
            {"MetricName": "test:total_loss", "Value": 6.7,
             "Timestamp": datetime.now(timezone.utc)},
        ])

    summary = training_jobs.training_job_summary(description).to_dict()

    assert summary == {
        "job_name": "review-nlp-ntm-1", "status": "Completed", "secondary_status": "Completed",
        "failure_reason": None,
        "metrics": {"validation:total_loss": 6.65, "test:total_loss": 6.7},
        "billable_seconds": 120, "training_seconds": 400, "instance_type": "ml.m5.xlarge",
        "instance_count": 2, "managed_spot": True,
        "model_artifact": f"s3://{BUCKET}/out/review-nlp-ntm-1/output/model.tar.gz",
    }


# --- CloudWatch logs -------------------------------------------------------------------------

LOG_GROUP = "/aws/sagemaker/TrainingJobs"


def _put_events(logs, stream, messages):
    now = int(time.time() * 1000)
    try:
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    except logs.exceptions.ResourceAlreadyExistsException:
        pass
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=[
        {"timestamp": now + offset, "message": message} for offset, message in enumerate(messages)])


@pytest.fixture
def logs(client_for):
    client = client_for("logs")
    client.create_log_group(logGroupName=LOG_GROUP)
    return client


def test_logs_follow_until_completed(sagemaker, logs):
    request = _request()
    job_name = request["TrainingJobName"]
    training_jobs.start_training_job(request, client=sagemaker)
    _put_events(logs, f"{job_name}/algo-1-1700000000", [f"epoch {i}" for i in range(5)])
    _put_events(logs, f"{job_name}/algo-2-1700000000", ["worker ready"])
    _put_events(logs, "other-job/algo-1-1700000000", ["not this job"])
    out = io.StringIO()

    printed = training_jobs.stream_training_logs(job_name, logs_client=logs,
                                                 sagemaker_client=sagemaker, out=out,
                                                 page_size=2, poll_seconds=0)

    assert printed == 6
    assert out.getvalue().splitlines() == [
        *[f"[algo-1-1700000000] epoch {i}" for i in range(5)],
        "[algo-2-1700000000] worker ready",
    ]


def test_logs_without_log_group(client_for):
    out = io.StringIO()

    printed = training_jobs.stream_training_logs("job-without-logs", follow=False,
                                                 logs_client=client_for("logs"), out=out)

    assert printed == 0
    assert out.getvalue() == ""


def test_logs_follow_picks_up_new_lines(logs, stubbed):
    sagemaker_stub, stubber = stubbed
    job_name = "review-nlp-ntm-1"
    stream = f"{job_name}/algo-1-1700000000"
    _put_events(logs, stream, ["first"])
    _expect_describe(stubber, job_name, status="InProgress", secondary="Training")
    _expect_describe(stubber, job_name, status="InProgress", secondary="Training")
    _expect_describe(stubber, job_name, status="Completed", secondary="Completed")

    # each status poll appends one more log line, as a running job would
    def append_line(**kwargs):
        _put_events(logs, stream, [f"after poll {len(out.getvalue().splitlines())}"])

    sagemaker_stub.meta.events.register("after-call.sagemaker.DescribeTrainingJob", append_line)
    out = io.StringIO()

    training_jobs.stream_training_logs(job_name, logs_client=logs,
                                       sagemaker_client=sagemaker_stub, out=out, poll_seconds=0)

    lines = out.getvalue().splitlines()
    assert lines[0] == "[algo-1-1700000000] first"
    assert len(lines) == 4
    assert len(set(lines)) == 4
