import socket

import pytest


def test_guard_rejects_remote_address():
    with pytest.raises(ConnectionRefusedError):
        socket.getaddrinfo("203.0.113.7", 443)


def test_guard_allows_loopback():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    client = socket.create_connection(server.getsockname(), timeout=2)
    client.close()
    server.close()
