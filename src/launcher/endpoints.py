"""SageMaker real-time endpoints: deploy (model, endpoint config, endpoint), invoke, delete.

`deploy_endpoint` names the model and the endpoint config after the endpoint, so
`delete_endpoint` can find all three from the endpoint name alone.
"""

from __future__ import annotations

import logging
import math
import re
from typing import Any, Mapping

from botocore.client import BaseClient
from botocore.exceptions import BotoCoreError, ClientError, WaiterError

from ..errors import UserError
from .aws import aws_client, resolve_role_arn
from .s3_uploads import parse_s3_uri

logger = logging.getLogger(__name__)

VARIANT_NAME = "AllTraffic"
# the pattern botocore's SageMaker model gives EndpointName and EndpointConfigName
_RESOURCE_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")


class EndpointDeploymentFailed(RuntimeError):
    """Creating an endpoint failed; the resources this deployment created were deleted."""


def deploy_endpoint(model_data_url: str, image_uri: str, role: str, instance_type: str,
                    instance_count: int, endpoint_name: str, *,
                    environment: Mapping[str, str] | None = None,
                    tags: Mapping[str, str] | None = None, wait: bool = True,
                    poll_seconds: float = 30.0, max_wait_seconds: float = 3600.0,
                    client: BaseClient | None = None) -> dict[str, Any]:
    """Create a model, an endpoint config and an endpoint, all named `endpoint_name`.

    `model_data_url` is the S3 URI of a `model.tar.gz`; `role` is an IAM role ARN or name.
    With `wait`, blocks on the `endpoint_in_service` waiter (polling every `poll_seconds`, at
    most `max_wait_seconds`). Returns DescribeEndpoint's response (status Creating when not
    waiting).

    If any step fails, the resources this call created are deleted again, newest first, and
    `EndpointDeploymentFailed` is raised with the cause (the endpoint's FailureReason when
    it reached Failed). Resources that already existed are never deleted.
    """
    _check_model_data_url(model_data_url)
    if not _RESOURCE_NAME.match(endpoint_name):
        raise UserError(
            f"endpoint_name={endpoint_name!r} must be 1 to 63 letters, digits and hyphens, "
            f"starting and ending with a letter or digit")
    if instance_count < 1:
        raise UserError(f"instance_count={instance_count} must be at least 1")
    client = client or aws_client("sagemaker")
    role_arn = resolve_role_arn(role)
    tag_list = [{"Key": key, "Value": value} for key, value in (tags or {}).items()]
    created: list[tuple[str, str]] = []
    try:
        _create_model(client, endpoint_name, image_uri, model_data_url, role_arn, environment,
                      tag_list)
        created.append(("model", endpoint_name))
        _create_endpoint_config(client, endpoint_name, instance_type, instance_count, tag_list)
        created.append(("endpoint config", endpoint_name))
        _create_endpoint(client, endpoint_name, tag_list)
        created.append(("endpoint", endpoint_name))
        if wait:
            _wait_in_service(client, endpoint_name, poll_seconds, max_wait_seconds)
        return client.describe_endpoint(EndpointName=endpoint_name)
    except (BotoCoreError, ClientError) as error:
        cause = _failure_reason(client, endpoint_name, error, created)
        _delete_created(client, created)
        raise EndpointDeploymentFailed(
            f"deploying endpoint {endpoint_name} failed: {cause}; deleted what this deployment "
            f"created: {', '.join(kind for kind, _ in created) or 'nothing'}") from error


def invoke_endpoint(endpoint_name: str, body: bytes | str, content_type: str,
                    accept: str = "application/json", *,
                    client: BaseClient | None = None) -> bytes:
    """Send one InvokeEndpoint request through sagemaker-runtime and return the response body.

    A `str` body is sent as UTF-8. Errors raised by the model container arrive as a
    `ClientError` with code ModelError and the container's message.
    """
    client = client or aws_client("sagemaker-runtime")
    payload = body.encode("utf-8") if isinstance(body, str) else body
    response = client.invoke_endpoint(EndpointName=endpoint_name, Body=payload,
                                      ContentType=content_type, Accept=accept)
    return response["Body"].read()


def delete_endpoint(endpoint_name: str, delete_config: bool = True, delete_model: bool = True, *,
                    client: BaseClient | None = None) -> dict[str, Any]:
    """Delete an endpoint and, by default, its endpoint config and the models it serves.

    The config and model names are read from the endpoint before anything is deleted. Returns
    the deleted names: {"endpoint": ..., "endpoint_config": ... or None, "models": [...]}.
    Raises `UserError` when the endpoint does not exist.
    """
    client = client or aws_client("sagemaker")
    try:
        config_name = client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
    except ClientError as error:
        if _is_not_found(error):
            raise UserError(f"endpoint {endpoint_name} not found") from error
        raise
    model_names = []
    if delete_model:
        config = client.describe_endpoint_config(EndpointConfigName=config_name)
        model_names = [variant["ModelName"] for variant in config["ProductionVariants"]]

    client.delete_endpoint(EndpointName=endpoint_name)
    logger.info("deleted endpoint %s", endpoint_name)
    if delete_config:
        client.delete_endpoint_config(EndpointConfigName=config_name)
        logger.info("deleted endpoint config %s", config_name)
    for model_name in model_names:
        client.delete_model(ModelName=model_name)
        logger.info("deleted model %s", model_name)
    return {"endpoint": endpoint_name, "endpoint_config": config_name if delete_config else None,
            "models": model_names}


def _check_model_data_url(model_data_url: str) -> None:
    parse_s3_uri(model_data_url)
    if not model_data_url.endswith(".tar.gz"):
        raise UserError(f"model_data_url={model_data_url!r} must name a .tar.gz object")


def _create_model(client: BaseClient, name: str, image_uri: str, model_data_url: str,
                  role_arn: str, environment: Mapping[str, str] | None,
                  tag_list: list[dict[str, str]]) -> None:
    container: dict[str, Any] = {"Image": image_uri, "ModelDataUrl": model_data_url}
    if environment:
        container["Environment"] = {str(key): str(value) for key, value in environment.items()}
    request: dict[str, Any] = {"ModelName": name, "PrimaryContainer": container,
                               "ExecutionRoleArn": role_arn}
    if tag_list:
        request["Tags"] = tag_list
    client.create_model(**request)
    logger.info("created model %s from %s", name, model_data_url)


def _create_endpoint_config(client: BaseClient, name: str, instance_type: str,
                            instance_count: int, tag_list: list[dict[str, str]]) -> None:
    request: dict[str, Any] = {
        "EndpointConfigName": name,
        "ProductionVariants": [{
            "VariantName": VARIANT_NAME,
            "ModelName": name,
            "InitialInstanceCount": instance_count,
            "InstanceType": instance_type,
        }],
    }
    if tag_list:
        request["Tags"] = tag_list
    client.create_endpoint_config(**request)
    logger.info("created endpoint config %s (%d x %s)", name, instance_count, instance_type)


def _create_endpoint(client: BaseClient, name: str, tag_list: list[dict[str, str]]) -> None:
    request: dict[str, Any] = {"EndpointName": name, "EndpointConfigName": name}
    if tag_list:
        request["Tags"] = tag_list
    client.create_endpoint(**request)
    logger.info("creating endpoint %s", name)


def _wait_in_service(client: BaseClient, name: str, poll_seconds: float,
                     max_wait_seconds: float) -> None:
    attempts = max(1, math.ceil(max_wait_seconds / max(poll_seconds, 1e-3)))
    client.get_waiter("endpoint_in_service").wait(
        EndpointName=name, WaiterConfig={"Delay": poll_seconds, "MaxAttempts": attempts})
    logger.info("endpoint %s is InService", name)


def _failure_reason(client: BaseClient, name: str, error: Exception,
                    created: list[tuple[str, str]]) -> str:
    if not isinstance(error, WaiterError) or ("endpoint", name) not in created:
        return str(error)
    try:
        description = client.describe_endpoint(EndpointName=name)
    except ClientError:
        return str(error)
    reason = description.get("FailureReason")
    status = description.get("EndpointStatus")
    return f"endpoint status {status}: {reason}" if reason else f"{error} (status {status})"


def _delete_created(client: BaseClient, created: list[tuple[str, str]]) -> None:
    deleters = {
        "endpoint": lambda name: client.delete_endpoint(EndpointName=name),
        "endpoint config": lambda name: client.delete_endpoint_config(EndpointConfigName=name),
        "model": lambda name: client.delete_model(ModelName=name),
    }
    for kind, name in reversed(created):
        try:
            deleters[kind](name)
            logger.info("deleted %s %s after the failed deployment", kind, name)
        except ClientError as error:
            logger.error("could not delete %s %s after the failed deployment; delete it "
                         "by hand: %s", kind, name, error)


def _is_not_found(error: ClientError) -> bool:
    # SageMaker reports a missing endpoint as ValidationException "Could not find endpoint"
    message = error.response.get("Error", {}).get("Message", "")
    return "Could not find" in message or error.response["Error"]["Code"] == "ResourceNotFound"
