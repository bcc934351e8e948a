"""torch.distributed across the hosts of resourceconfig.json: one process per host.

Every host meets at the first host in sorted `hosts` on a fixed port; a host's rank is its
index in `hosts`. Gloo carries the collectives on CPU, NCCL on GPU.

SageMaker's host names (algo-1, algo-2, ...) resolve inside a training cluster only. Where
they do not (tests, or hosts on one machine), `SM_HOST_ADDRESSES` maps them to addresses,
e.g. `{"algo-1": "127.0.0.1", "algo-2": "127.0.0.1"}`, and `MASTER_PORT` overrides the port.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import UserError
from .environment import ResourceConfig

logger = logging.getLogger(__name__)

DEFAULT_MASTER_PORT = 29500
# SageMaker starts the hosts of a job within minutes of each other.
DEFAULT_RENDEZVOUS_TIMEOUT_S = 900
# Host names can take a while to appear in the cluster's DNS after the container starts.
RESOLVE_TIMEOUT_S = 300


def host_addresses() -> dict[str, str]:
    raw = os.environ.get("SM_HOST_ADDRESSES")
    if not raw:
        return {}
    try:
        mapping = json.loads(raw)
    except json.JSONDecodeError as error:
        raise UserError(f"SM_HOST_ADDRESSES is not a JSON object of host: address: {error}") \
            from error
    if not isinstance(mapping, dict):
        raise UserError("SM_HOST_ADDRESSES must be a JSON object of host: address")
    return {str(host): str(address) for host, address in mapping.items()}


def resolve_host(host: str, timeout_s: float = RESOLVE_TIMEOUT_S) -> str:
    """Return the address of `host`, retrying while the cluster's DNS does not know it yet."""
    mapped = host_addresses().get(host)
    if mapped:
        return mapped
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
        except socket.gaierror as error:
            if time.monotonic() > deadline:
                raise UserError(
                    f"host {host} from resourceconfig.json did not resolve within "
                    f"{timeout_s:.0f} s ({error}); outside SageMaker set SM_HOST_ADDRESSES "
                    f"to map host names to addresses") from error
            time.sleep(1.0)


def init_distributed(resources: ResourceConfig, use_cuda: bool) -> bool:
    """Join the job's process group when it has more than one host; return whether it did."""
    if resources.world_size == 1:
        return False

    import torch.distributed as dist

    master_address = resolve_host(resources.master_host)
    port = int(os.environ.get("MASTER_PORT") or DEFAULT_MASTER_PORT)
    os.environ["MASTER_ADDR"] = master_address
    os.environ["MASTER_PORT"] = str(port)
    os.environ["RANK"] = str(resources.rank)
    os.environ["WORLD_SIZE"] = str(resources.world_size)

    # Gloo and NCCL pick the interface resourceconfig.json names (eth0, eth1, or lo in tests)
    # rather than the one the machine's host name happens to resolve to.
    interface = resources.network_interface_name
    if Path("/sys/class/net", interface).exists():
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)

    backend = "nccl" if use_cuda else "gloo"
    timeout_s = float(os.environ.get("REVIEW_NLP_RENDEZVOUS_TIMEOUT_S")
                      or DEFAULT_RENDEZVOUS_TIMEOUT_S)
    logger.info("Joining %s process group: rank %d of %d, master %s (%s:%d)", backend,
                resources.rank, resources.world_size, resources.master_host, master_address,
                port)
    dist.init_process_group(backend=backend, init_method="env://", rank=resources.rank,
                            world_size=resources.world_size,
                            timeout=datetime.timedelta(seconds=timeout_s))
    return True


def shutdown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
