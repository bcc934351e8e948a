"""SageMaker's `serve` program: the model in /opt/ml/model behind /ping and /invocations.

    docker run IMAGE serve
    SAGEMAKER_BASE_DIR=JOB SAGEMAKER_BIND_TO_PORT=8081 python -m review_nlp.container.serve

gunicorn runs `MODEL_SERVER_WORKERS` sync workers (default: one per CPU). Each loads the
model once and handles one request at a time with one torch thread. Settings by environment:

    SAGEMAKER_BIND_TO_PORT        port (default 8080, the port SageMaker sends requests to)
    REVIEW_NLP_BIND_HOST          address to listen on (default 0.0.0.0; tests use 127.0.0.1)
    MODEL_SERVER_WORKERS          worker processes (default: CPUs available to the container)
    MODEL_SERVER_TIMEOUT          seconds a worker may spend on one request before gunicorn
                                  restarts it (default 55, inside SageMaker's 60 s limit)
    SAGEMAKER_MAX_PAYLOAD_IN_MB   largest request body accepted (default 6, as for endpoints)
    SAGEMAKER_BATCH, SAGEMAKER_MAX_CONCURRENT_TRANSFORMS, SAGEMAKER_BATCH_STRATEGY
                                  batch transform settings, reported by /execution-parameters
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from ..errors import UserError
from . import codecs
from .environment import DEFAULT_BASE_DIR
from .logs import configure_logging

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8080
DEFAULT_TIMEOUT_S = 55
DEFAULT_MAX_PAYLOAD_MB = 6
# Endpoints get SIGKILL 30 s after SIGTERM; workers finish their requests before that.
GRACEFUL_TIMEOUT_S = 25
_DRAIN_CHUNK = 1 << 20

StartResponse = Callable[[str, list[tuple[str, str]]], Any]

_STATUS_LINES = {200: "200 OK", 400: "400 Bad Request", 404: "404 Not Found",
                 405: "405 Method Not Allowed", 413: "413 Payload Too Large",
                 415: "415 Unsupported Media Type", 500: "500 Internal Server Error",
                 503: "503 Service Unavailable"}


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _int_setting(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise UserError(f"{name}={raw!r} must be an integer") from None


@dataclass
class ServerSettings:
    model_dir: Path
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    workers: int = 1
    timeout_s: int = DEFAULT_TIMEOUT_S
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_MB << 20
    batch: bool = False
    max_concurrent_transforms: int = 1

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "ServerSettings":
        environ = os.environ if environ is None else environ
        base_dir = Path(environ.get("SAGEMAKER_BASE_DIR") or DEFAULT_BASE_DIR)
        workers = _int_setting(environ, "MODEL_SERVER_WORKERS", _cpu_count())
        payload_mb = _int_setting(environ, "SAGEMAKER_MAX_PAYLOAD_IN_MB", DEFAULT_MAX_PAYLOAD_MB)
        return cls(
            model_dir=base_dir / "model",
            host=environ.get("REVIEW_NLP_BIND_HOST") or "0.0.0.0",
            port=_int_setting(environ, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT),
            workers=max(1, workers),
            timeout_s=_int_setting(environ, "MODEL_SERVER_TIMEOUT", DEFAULT_TIMEOUT_S),
            max_payload_bytes=max(1, payload_mb) << 20,
            batch=(environ.get("SAGEMAKER_BATCH") or "").lower() == "true",
            max_concurrent_transforms=_int_setting(
                environ, "SAGEMAKER_MAX_CONCURRENT_TRANSFORMS", max(1, workers)),
        )

    @property
    def max_payload_mb(self) -> int:
        return self.max_payload_bytes >> 20


class LoadedModel:
    """A trained model with its featurizer, loaded once per worker."""

    def __init__(self, model_dir: Path):
        from ..models import registry
        from ..models.artifact import load_artifact

        artifact = load_artifact(model_dir)
        self.algorithm = artifact.algorithm
        self.model = registry.model_class(artifact.algorithm).from_artifact(artifact)
        self.feature_dim = int(artifact.config["feature_dim"])
        self.featurizer = None
        if artifact.featurizer:
            from ..data.features import Featurizer
            self.featurizer = Featurizer.from_dict(artifact.featurizer, artifact.vocabulary)

    def predict(self, request: codecs.DecodedRequest) -> list[dict[str, Any]]:
        features = request.features
        if request.texts is not None:
            if self.featurizer is None:
                raise codecs.UnsupportedMediaType(
                    "this model was trained without auxiliary/featurizer.json, so it takes "
                    "feature vectors only (text/csv, application/json, "
                    "application/x-recordio-protobuf), not review text")
            features = self.featurizer.transform(request.texts)
        return self.model.predict(features)


class InferenceApp:
    """The WSGI application: /ping, /invocations and /execution-parameters."""

    def __init__(self, settings: ServerSettings, model: LoadedModel | None = None):
        self.settings = settings
        self.model = model
        self.load_error: str | None = None
        if model is None:
            self._load()

    def _load(self) -> None:
        started = time.monotonic()
        try:
            self.model = LoadedModel(self.settings.model_dir)
        except Exception as error:  # noqa: BLE001 - /ping reports it instead of crashing
            self.load_error = f"cannot load the model from {self.settings.model_dir}: {error}"
            logger.exception("Model not loaded; /ping responds 503: %s", self.load_error)
            return
        logger.info("Loaded %s model (feature_dim=%d, featurizer: %s) in %.2f s",
                    self.model.algorithm, self.model.feature_dim,
                    "yes" if self.model.featurizer else "no", time.monotonic() - started)

    def __call__(self, environ: dict[str, Any], start_response: StartResponse
                 ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/ping":
            return self._ping(method, start_response)
        if path == "/invocations":
            if method != "POST":
                return _respond(start_response, 405, _error_body("use POST for /invocations"))
            return self._invocations(environ, start_response)
        if path == "/execution-parameters":
            return self._execution_parameters(start_response)
        return _respond(start_response, 404, _error_body(f"no route {path}"))

    def _ping(self, method: str, start_response: StartResponse) -> Iterable[bytes]:
        if method not in ("GET", "HEAD"):
            return _respond(start_response, 405, _error_body("use GET for /ping"))
        if self.model is None:
            return _respond(start_response, 503, _error_body(self.load_error or "not loaded"))
        return _respond(start_response, 200, b"", "text/plain")

    def _execution_parameters(self, start_response: StartResponse) -> Iterable[bytes]:
        parameters = {
            "MaxConcurrentTransforms": self.settings.max_concurrent_transforms,
            "BatchStrategy": "MULTI_RECORD",
            "MaxPayloadInMB": self.settings.max_payload_mb,
        }
        return _respond(start_response, 200, json.dumps(parameters).encode())

    def _invocations(self, environ: dict[str, Any], start_response: StartResponse
                     ) -> Iterable[bytes]:
        if self.model is None:
            return _respond(start_response, 503, _error_body(self.load_error or "not loaded"))
        try:
            body = self._read_body(environ)
            response_type = codecs.choose_response_type(environ.get("HTTP_ACCEPT"))
            request = codecs.decode_request(body, environ.get("CONTENT_TYPE"),
                                            self.model.feature_dim)
            predictions = self.model.predict(request)
            payload = codecs.encode_response(predictions, response_type)
        except codecs.RequestError as error:
            logger.info("Rejected request with %d: %s", error.status, error)
            return _respond(start_response, error.status, _error_body(str(error)))
        except UserError as error:
            logger.info("Rejected request with 400: %s", error)
            return _respond(start_response, 400, _error_body(str(error)))
        except Exception:  # noqa: BLE001 - a failed request must not take the worker down
            logger.exception("Prediction failed")
            return _respond(start_response, 500, _error_body("prediction failed; see the log"))
        return _respond(start_response, 200, payload, response_type)

    def _read_body(self, environ: dict[str, Any]) -> bytes:
        limit = self.settings.max_payload_bytes
        stream = environ["wsgi.input"]
        length_header = environ.get("CONTENT_LENGTH") or ""
        length = int(length_header) if length_header.isdigit() else None
        if length is not None and length > limit:
            _drain(stream, length)
            raise codecs.RequestError(self._too_large_message(length), status=413)
        body = stream.read(length) if length is not None else stream.read(limit + 1)
        if len(body) > limit:
            raise codecs.RequestError(self._too_large_message(len(body)), status=413)
        return body

    def _too_large_message(self, size: int) -> str:
        return (f"the body has {size} bytes, more than SAGEMAKER_MAX_PAYLOAD_IN_MB="
                f"{self.settings.max_payload_mb} MB allows; send fewer records per request")


def _drain(stream: Any, length: int) -> None:
    """Read and discard the rest of a rejected body, so the client sees the 413 response
    instead of a connection reset."""
    remaining = length
    while remaining > 0:
        chunk = stream.read(min(_DRAIN_CHUNK, remaining))
        if not chunk:
            break
        remaining -= len(chunk)


def _error_body(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


def _respond(start_response: StartResponse, status: int, body: bytes,
             content_type: str = "application/json") -> list[bytes]:
    start_response(_STATUS_LINES[status], [("Content-Type", content_type),
                                           ("Content-Length", str(len(body)))])
    return [body]


def create_app(settings: ServerSettings | None = None) -> InferenceApp:
    """Build the WSGI app for this process, loading the model with one torch thread."""
    import torch

    torch.set_num_threads(1)
    return InferenceApp(settings or ServerSettings.from_environ())


def run_server(settings: ServerSettings) -> None:
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self) -> None:
            options = {
                "bind": f"{settings.host}:{settings.port}",
                "workers": settings.workers,
                "worker_class": "sync",
                "timeout": settings.timeout_s,
                "graceful_timeout": GRACEFUL_TIMEOUT_S,
                "preload_app": False,
                "errorlog": "-",
                "accesslog": None,
                "loglevel": "info",
                "proc_name": "review-nlp-serve",
            }
            for name, value in options.items():
                self.cfg.set(name, value)

        def load(self) -> InferenceApp:
            # Runs in each worker after the fork, so every worker loads its own model.
            return create_app(settings)

    if settings.timeout_s >= 60:
        logger.warning("MODEL_SERVER_TIMEOUT=%d is not below SageMaker's 60 s request limit; "
                       "SageMaker gives up on a request before gunicorn does",
                       settings.timeout_s)
    logger.info("Serving %s on %s:%d with %d workers (timeout %d s, max payload %d MB%s)",
                settings.model_dir, settings.host, settings.port, settings.workers,
                settings.timeout_s, settings.max_payload_mb,
                ", batch transform" if settings.batch else "")
    Server().run()


def main(argv: list[str] | None = None) -> int:
    """Start the HTTP server; returns when gunicorn's master process exits."""
    del argv  # SageMaker passes only the word `serve`
    configure_logging()
    # One math thread per worker: the workers already use every CPU between them.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    try:
        settings = ServerSettings.from_environ()
    except UserError as error:
        logger.error("Cannot start the server: %s", error)
        return 1
    run_server(settings)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
