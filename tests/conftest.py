"""Fixtures shared by every test: the loopback-only network guard and the real review files."""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from pathlib import Path

import pytest

REVIEWS_DIR = Path(os.environ.get(
    "REVIEWS_DATA_DIR", Path(__file__).resolve().parents[1].parent / "shared" / "data" / "reviews"))

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}
_guard_active = False


def _is_loopback(host) -> bool:
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode()
    host = str(host)
    if host in _LOOPBACK_NAMES or host == "":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


def _network_audit(event: str, args: tuple) -> None:
    # Tests may reach 127.0.0.1 only, so a forgotten endpoint setting can never reach AWS.
    if not _guard_active:
        return
    if event == "socket.getaddrinfo":
        host = args[0]
    elif event == "socket.connect":
        sock, address = args[0], args[1]
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return
        host = address[0]
    else:
        return
    if not _is_loopback(host):
        raise ConnectionRefusedError(f"test tried to reach {host!r}; tests may reach loopback only")


sys.addaudithook(_network_audit)


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch):
    """Fail any test that resolves or connects to a non-loopback address; fake AWS settings."""
    global _guard_active
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    _guard_active = True
    yield
    _guard_active = False


@pytest.fixture(scope="session")
def reviews_dir() -> Path:
    """The folder of real Amazon reviews beside the checkout; tests skip when it is absent."""
    if not REVIEWS_DIR.is_dir():
        pytest.skip(f"real review files not found at {REVIEWS_DIR} (set REVIEWS_DATA_DIR)")
    return REVIEWS_DIR
