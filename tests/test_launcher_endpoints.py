"""Endpoints: deploy, invoke and delete against moto; failed deployments through Stubber."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from botocore.stub import Stubber
from launcher_moto import (  # noqa: F401
    BUCKET,
    ROLE_ARN,
    RequestRecorder,
    client_for,
    moto_endpoint,
    moto_server_url,
    post_json,
    shared_session,
)

from review_nlp.errors import UserError
from review_nlp.launcher import endpoints
from review_nlp.launcher.aws import aws_client
from review_nlp.launcher.endpoints import EndpointDeploymentFailed

IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/review-nlp:latest"
MODEL_URL = f"s3://{BUCKET}/runs/job/output/model.tar.gz"
NAME = "review-nlp-ntm-endpoint"


def _deploy(client, **overrides):
    arguments = dict(model_data_url=MODEL_URL, image_uri=IMAGE, role=ROLE_ARN,
                     instance_type="ml.m5.large", instance_count=1, endpoint_name=NAME,
                     poll_seconds=0, client=client)
    arguments.update(overrides)
    return endpoints.deploy_endpoint(**arguments)


# --- against moto ----------------------------------------------------------------------------

@pytest.fixture
def sagemaker(client_for):
    return client_for("sagemaker")


def test_deploy_creates_model_config_endpoint(sagemaker):
    description = _deploy(sagemaker, environment={"MODEL_SERVER_WORKERS": 2},
                          tags={"project": "review-nlp"})

    model = sagemaker.describe_model(ModelName=NAME)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=NAME)
    assert description["EndpointStatus"] == "InService"
    assert description["EndpointConfigName"] == NAME
    assert model["PrimaryContainer"]["Image"] == IMAGE
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_URL
    assert model["PrimaryContainer"]["Environment"] == {"MODEL_SERVER_WORKERS": "2"}
    assert model["ExecutionRoleArn"] == ROLE_ARN
    [variant] = config["ProductionVariants"]
    assert variant["VariantName"] == "AllTraffic"
    assert variant["ModelName"] == NAME
    assert variant["InitialInstanceCount"] == 1
    assert variant["InstanceType"] == "ml.m5.large"


def test_deploy_without_wait(sagemaker):
    recorder = RequestRecorder(sagemaker)

    _deploy(sagemaker, wait=False)

    assert recorder.operations() == ["CreateModel", "CreateEndpointConfig", "CreateEndpoint",
                                     "DescribeEndpoint"]


def test_invoke_endpoint_sends_body_and_headers(moto_endpoint, client_for):
    post_json(moto_endpoint + "/moto-api/static/sagemaker/endpoint-results", {"results": [{
        "Body": json.dumps({"predictions": [{"topic_weights": [0.25, 0.75]}]}),
        "ContentType": "application/json",
        "InvokedProductionVariant": "AllTraffic",
        "CustomAttributes": "",
    }]})
    runtime = client_for("sagemaker-runtime")
    recorder = RequestRecorder(runtime)

    response = endpoints.invoke_endpoint(NAME, "great gift card", "text/plain",
                                         accept="application/json", client=runtime)

    assert json.loads(response) == {"predictions": [{"topic_weights": [0.25, 0.75]}]}
    [sent] = recorder.requests
    assert sent.operation == "InvokeEndpoint"
    assert sent.url == f"{moto_endpoint}/endpoints/{NAME}/invocations"
    assert sent.body == b"great gift card"
    assert sent.headers["Content-Type"] == "text/plain"
    assert sent.headers["Accept"] == "application/json"


def test_invoke_with_default_client(moto_endpoint):
    response = endpoints.invoke_endpoint(NAME, b"\x0a\x00", "application/x-recordio-protobuf")

    assert response == b"body"


def test_delete_removes_everything(sagemaker):
    _deploy(sagemaker)

    deleted = endpoints.delete_endpoint(NAME, client=sagemaker)

    assert deleted == {"endpoint": NAME, "endpoint_config": NAME, "models": [NAME]}
    assert sagemaker.list_endpoints()["Endpoints"] == []
    assert sagemaker.list_endpoint_configs()["EndpointConfigs"] == []
    assert sagemaker.list_models()["Models"] == []


def test_delete_keeps_config_and_model(sagemaker):
    _deploy(sagemaker)

    deleted = endpoints.delete_endpoint(NAME, delete_config=False, delete_model=False,
                                        client=sagemaker)

    assert deleted == {"endpoint": NAME, "endpoint_config": None, "models": []}
    assert [c["EndpointConfigName"] for c in
            sagemaker.list_endpoint_configs()["EndpointConfigs"]] == [NAME]
    assert [m["ModelName"] for m in sagemaker.list_models()["Models"]] == [NAME]


def test_delete_missing_endpoint_raises(sagemaker):
    with pytest.raises(UserError, match="not found"):
        endpoints.delete_endpoint("no-such-endpoint", client=sagemaker)


@pytest.mark.parametrize("url", ["s3://bucket/model.zip", "/local/model.tar.gz"])
def test_deploy_rejects_model_url(url):
    with pytest.raises(UserError):
        endpoints.deploy_endpoint(url, IMAGE, ROLE_ARN, "ml.m5.large", 1, NAME)


# --- failed deployments, through Stubber -----------------------------------------------------

@pytest.fixture
def stubbed(shared_session):
    client = aws_client("sagemaker", session=shared_session)
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _arn(kind):
    return f"arn:aws:sagemaker:us-east-1:123456789012:{kind}/{NAME}"


def _expect_create_model(stubber):
    stubber.add_response("create_model", {"ModelArn": _arn("model")}, {
        "ModelName": NAME,
        "PrimaryContainer": {"Image": IMAGE, "ModelDataUrl": MODEL_URL},
        "ExecutionRoleArn": ROLE_ARN,
    })


def _expect_create_config(stubber):
    stubber.add_response("create_endpoint_config", {"EndpointConfigArn": _arn("endpoint-config")},
                         {"EndpointConfigName": NAME, "ProductionVariants": [{
                             "VariantName": "AllTraffic", "ModelName": NAME,
                             "InitialInstanceCount": 1, "InstanceType": "ml.m5.large"}]})


def _expect_delete(stubber, operation, parameter):
    stubber.add_response(operation, {}, {parameter: NAME})


def _endpoint_description(status, reason=None):
    now = datetime.now(timezone.utc)
    description = {"EndpointName": NAME, "EndpointArn": _arn("endpoint"),
                   "EndpointConfigName": NAME, "EndpointStatus": status,
                   "CreationTime": now, "LastModifiedTime": now}
    if reason:
        description["FailureReason"] = reason
    return description


def test_failed_endpoint_creation_deletes_config_and_model(stubbed):
    client, stubber = stubbed
    _expect_create_model(stubber)
    _expect_create_config(stubber)
    stubber.add_client_error("create_endpoint", service_error_code="ResourceLimitExceeded",
                             service_message="account-level service limit exceeded")
    _expect_delete(stubber, "delete_endpoint_config", "EndpointConfigName")
    _expect_delete(stubber, "delete_model", "ModelName")

    with pytest.raises(EndpointDeploymentFailed) as raised:
        _deploy(client)

    assert "service limit exceeded" in str(raised.value)
    assert "deleted what this deployment created: model, endpoint config" in str(raised.value)


def test_failed_config_creation_deletes_model(stubbed):
    client, stubber = stubbed
    _expect_create_model(stubber)
    stubber.add_client_error("create_endpoint_config", service_error_code="ValidationException",
                             service_message="instance type not supported")
    _expect_delete(stubber, "delete_model", "ModelName")

    with pytest.raises(EndpointDeploymentFailed, match="instance type not supported"):
        _deploy(client)


def test_failed_model_creation_deletes_nothing(stubbed):
    client, stubber = stubbed
    stubber.add_client_error("create_model", service_error_code="ValidationException",
                             service_message="Cannot create already existing model")

    with pytest.raises(EndpointDeploymentFailed, match="deleted what this deployment created: "
                                                       "nothing"):
        _deploy(client)


def test_endpoint_failing_in_service_is_deleted(stubbed):
    client, stubber = stubbed
    _expect_create_model(stubber)
    _expect_create_config(stubber)
    stubber.add_response("create_endpoint", {"EndpointArn": _arn("endpoint")},
                         {"EndpointName": NAME, "EndpointConfigName": NAME})
    reason = "The primary container did not pass the ping health check."
    stubber.add_response("describe_endpoint", _endpoint_description("Failed", reason),
                         {"EndpointName": NAME})
    stubber.add_response("describe_endpoint", _endpoint_description("Failed", reason),
                         {"EndpointName": NAME})
    _expect_delete(stubber, "delete_endpoint", "EndpointName")
    _expect_delete(stubber, "delete_endpoint_config", "EndpointConfigName")
    _expect_delete(stubber, "delete_model", "ModelName")

    with pytest.raises(EndpointDeploymentFailed) as raised:
        _deploy(client)

    assert "endpoint status Failed: The primary container did not pass" in str(raised.value)


def test_cleanup_error_is_logged_not_raised(stubbed, caplog):
    client, stubber = stubbed
    _expect_create_model(stubber)
    stubber.add_client_error("create_endpoint_config", service_error_code="ValidationException",
                             service_message="bad config")
    stubber.add_client_error("delete_model", service_error_code="ThrottlingException",
                             service_message="Rate exceeded")

    with pytest.raises(EndpointDeploymentFailed, match="bad config"):
        _deploy(client)

    assert "could not delete model review-nlp-ntm-endpoint" in caplog.text


def test_deploy_rejects_endpoint_name():
    with pytest.raises(UserError, match="endpoint_name="):
        endpoints.deploy_endpoint(MODEL_URL, IMAGE, ROLE_ARN, "ml.m5.large", 1, "bad_name")
