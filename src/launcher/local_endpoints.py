"""Local endpoints: the container's `serve` as a background process or a Docker container on
127.0.0.1, remembered by name in a state folder so `predict` and `delete-endpoint` find them.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from ..files import atomic_write_text

logger = logging.getLogger(__name__)

PING_TIMEOUT_S = 120.0


@dataclass
class LocalEndpoint:
    name: str
    mode: str          # "local" (a process) or "docker"
    port: int
    root: str          # the folder mounted or used as /opt/ml
    pid: int | None = None
    container: str | None = None


def state_dir() -> Path:
    """Return the folder of endpoint records: $REVIEW_NLP_STATE_DIR, else ~/.review_nlp/endpoints."""
    return Path(os.environ.get("REVIEW_NLP_STATE_DIR", Path.home() / ".review_nlp" / "endpoints"))


def _record_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def unpack_model(model: Path, root: Path) -> Path:
    """Put the model where SageMaker puts it, `<root>/model/`, from model.tar.gz or a folder."""
    model_dir = root / "model"
    shutil.rmtree(model_dir, ignore_errors=True)
    model_dir.mkdir(parents=True)
    if model.is_dir():
        shutil.copytree(model, model_dir, dirs_exist_ok=True)
    elif model.is_file():
        with tarfile.open(model, "r:gz") as archive:
            archive.extractall(model_dir, filter="data")
    else:
        raise UserError(f"model {model} not found: pass a model.tar.gz or a model folder")
    return model_dir


def ping(port: int, timeout: float = 2.0) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        connection.request("GET", "/ping")
        return connection.getresponse().status == 200
    except OSError:
        return False


def _wait_until_ready(port: int, alive, log_path: Path | None) -> None:
    deadline = time.monotonic() + PING_TIMEOUT_S
    while time.monotonic() < deadline:
        if ping(port):
            return
        if not alive():
            break
        time.sleep(0.5)
    tail = log_path.read_text(errors="replace")[-2000:] if log_path and log_path.exists() else ""
    raise UserError(f"the endpoint on port {port} did not respond to GET /ping with 200 within "
                    f"{PING_TIMEOUT_S:.0f} s; server log:\n{tail}")


def start_local_endpoint(name: str, model: Path, *, mode: str = "local", port: int = 8080,
                         workers: int = 2, image: str = "review-nlp:latest") -> LocalEndpoint:
    """Serve `model` on 127.0.0.1:`port` until `stop_local_endpoint(name)`."""
    if _record_path(name).exists():
        raise UserError(f"endpoint {name!r} exists already; delete it first with "
                        f"`launch.py delete-endpoint --endpoint-name {name}`")
    if ping(port, timeout=0.5):
        raise UserError(f"port {port} is already serving; choose another --port")
    root = state_dir() / name
    if mode == "docker":
        from .job_folders import require_docker_image

        require_docker_image(image)
    unpack_model(model, root)
    log_path = root / "serve.log"
    # Local endpoints listen on loopback only; SageMaker's own hosts listen on every address.
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "MODEL_SERVER_WORKERS": str(workers),
           "REVIEW_NLP_BIND_HOST": "127.0.0.1"}
    if mode == "local":
        env["SAGEMAKER_BASE_DIR"] = str(root)
        with open(log_path, "ab") as log:
            process = subprocess.Popen([sys.executable, "-m", "review_nlp.container.serve"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        endpoint = LocalEndpoint(name, mode, port, str(root), pid=process.pid)
        alive = lambda: process.poll() is None  # noqa: E731
    elif mode == "docker":
        command = ["docker", "run", "-d", "--pull", "never", "--network", "host",
                   "-v", f"{root.resolve()}:/opt/ml",
                   "-e", f"SAGEMAKER_BIND_TO_PORT={port}", "-e", f"MODEL_SERVER_WORKERS={workers}",
                   "-e", "REVIEW_NLP_BIND_HOST=127.0.0.1",
                   image, "serve"]
        started = subprocess.run(command, capture_output=True, text=True, check=False)
        if started.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise UserError(f"docker run failed for endpoint {name!r}: {started.stderr.strip()}")
        container = started.stdout.strip()
        endpoint = LocalEndpoint(name, mode, port, str(root), container=container)
        alive = lambda: _docker_running(container)  # noqa: E731
    else:
        raise ValueError(f"mode {mode!r} is not a local endpoint mode")
    try:
        _wait_until_ready(port, alive, log_path if mode == "local" else None)
    except BaseException:
        _stop(endpoint)
        shutil.rmtree(root, ignore_errors=True)
        raise
    atomic_write_text(_record_path(name), json.dumps(asdict(endpoint), indent=2))
    logger.info("Endpoint %s serving on http://127.0.0.1:%d (%s)", name, port, mode)
    return endpoint


def _docker_running(container: str) -> bool:
    result = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", container],
                            capture_output=True, text=True, check=False)
    return result.stdout.strip() == "true"


def load_local_endpoint(name: str) -> LocalEndpoint:
    path = _record_path(name)
    if not path.is_file():
        raise UserError(f"no local endpoint named {name!r} (looked in {state_dir()})")
    return LocalEndpoint(**json.loads(path.read_text()))


def invoke_local_endpoint(name: str, body: bytes, content_type: str,
                          accept: str = "application/json", timeout: float = 60.0) -> bytes:
    endpoint = load_local_endpoint(name)
    connection = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=timeout)
    try:
        connection.request("POST", "/invocations", body=body,
                           headers={"Content-Type": content_type, "Accept": accept})
        response = connection.getresponse()
        payload = response.read()
    except OSError as error:
        raise UserError(f"endpoint {name!r} on port {endpoint.port} did not respond ({error}); "
                        f"check it with `launch.py deploy` again or delete it") from None
    if response.status != 200:
        raise UserError(f"endpoint {name!r} returned HTTP {response.status}: "
                        f"{payload.decode(errors='replace')[:500]}")
    return payload


def _stop(endpoint: LocalEndpoint) -> None:
    if endpoint.pid:
        try:
            os.killpg(endpoint.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(50):
            try:
                os.kill(endpoint.pid, 0)
                # reap if it is our child; ignore otherwise
                os.waitpid(endpoint.pid, os.WNOHANG)
            except (ProcessLookupError, ChildProcessError):
                return
            time.sleep(0.1)
        try:
            os.killpg(endpoint.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if endpoint.container:
        subprocess.run(["docker", "rm", "-f", endpoint.container], capture_output=True, check=False)


def stop_local_endpoint(name: str) -> None:
    endpoint = load_local_endpoint(name)
    _stop(endpoint)
    _record_path(name).unlink(missing_ok=True)
    shutil.rmtree(endpoint.root, ignore_errors=True)
    logger.info("Endpoint %s stopped", name)
