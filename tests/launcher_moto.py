"""Shared pieces of the launcher tests: a moto server on 127.0.0.1 and request capture.

Test modules import the fixtures from here (`from launcher_moto import moto_endpoint`).
"""

from __future__ import annotations

import json
import logging
import urllib.request
from datetime import datetime, timezone
from typing import Any, NamedTuple

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto.server import ThreadedMotoServer

from review_nlp.launcher.aws import aws_client

ROLE_ARN = "arn:aws:iam::123456789012:role/ReviewNlpSageMaker"
BUCKET = "review-nlp-test-bucket"


@pytest.fixture(scope="session")
def moto_server_url():
    """One moto server for the whole session, bound to 127.0.0.1 on a free port."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_endpoint(moto_server_url, monkeypatch):
    """Aim every boto3 client at the moto server through AWS_ENDPOINT_URL, with empty state."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    post_json(moto_server_url + "/moto-api/reset", {})
    return moto_server_url


@pytest.fixture(scope="session")
def shared_session():
    """One boto3 session for all tests, so each service model is parsed once, not per test."""
    return boto3.Session(region_name="us-east-1", aws_access_key_id="testing",
                         aws_secret_access_key="testing")


@pytest.fixture
def client_for(moto_endpoint, shared_session):
    """Return a function that builds a client of the shared session, aimed at moto."""
    return lambda service: aws_client(service, session=shared_session)


def post_json(url: str, payload: Any) -> bytes:
    request = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.read()


class SentRequest(NamedTuple):
    operation: str
    url: str
    headers: dict[str, str]
    body: bytes


class RequestRecorder:
    """Records every request a botocore client sends, as it goes on the wire."""

    def __init__(self, client):
        self.requests: list[SentRequest] = []
        client.meta.events.register("before-send", self._record)

    def _record(self, request, event_name, **kwargs):
        body = request.body.encode() if isinstance(request.body, str) else request.body
        headers = {name: value.decode() if isinstance(value, bytes) else value
                   for name, value in request.headers.items()}
        self.requests.append(SentRequest(event_name.rsplit(".", 1)[-1], request.url, headers,
                                         body or b""))

    def json_bodies(self, operation: str) -> list[dict[str, Any]]:
        return [json.loads(sent.body) for sent in self.requests if sent.operation == operation]

    def operations(self) -> list[str]:
        return [sent.operation for sent in self.requests]


class _RawBody:
    def __init__(self, data: bytes):
        self._data = data

    def stream(self, **kwargs):
        yield self._data


def inject_throttling(client, operation: str, times: int) -> list[int]:
    """Make the next `times` sends of `operation` get an HTTP 400 ThrottlingException.

    The fake response replaces the HTTP exchange only, so botocore's retry handler treats it
    as a response from AWS. Returns a list that collects one entry per injected response.
    """
    injected: list[int] = []

    def throttle(request, event_name, **kwargs):
        if len(injected) >= times:
            return None
        injected.append(1)
        body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
        headers = {"x-amzn-RequestId": "throttled", "Content-Type": "application/x-amz-json-1.1"}
        return AWSResponse(request.url, 400, headers, _RawBody(body))

    service = client.meta.service_model.service_id.hyphenize()
    client.meta.events.register(f"before-send.{service}.{operation}", throttle)
    return injected


def training_job_description(job_name: str = "review-nlp-ntm-1", *, status: str = "InProgress",
                             secondary: str = "Training", **extra: Any) -> dict[str, Any]:
    """A DescribeTrainingJob response with every field the service model requires."""
    description = {
        "TrainingJobName": job_name,
        "TrainingJobArn": f"arn:aws:sagemaker:us-east-1:123456789012:training-job/{job_name}",
        "ModelArtifacts": {"S3ModelArtifacts": f"s3://{BUCKET}/out/{job_name}/output/model.tar.gz"},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "AlgorithmSpecification": {"TrainingImage": "image:1", "TrainingInputMode": "File"},
        "ResourceConfig": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2,
                           "VolumeSizeInGB": 30},
        "StoppingCondition": {"MaxRuntimeInSeconds": 3600},
        "CreationTime": datetime.now(timezone.utc),
    }
    description.update(extra)
    return description
