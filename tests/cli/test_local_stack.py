"""The local stack's own checks and lifecycle (cli/nanolens_cli/stack.py)."""

from __future__ import annotations

import socket

import pytest

from nanolens_cli.stack import refuse_taken


def _port_left_in_time_wait() -> int:
    """A port whose server closed its connection first, as a stopped stack's servers do: the
    server-side socket lingers in TIME_WAIT. The listener sets SO_REUSEADDR like every server the
    stack runs (gRPC, SeaweedFS, Go's and Python's HTTP servers)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the server closes first: its side goes through FIN_WAIT to TIME_WAIT
        client.close()
    return port


def test_the_port_check_lets_a_restart_through_time_wait_sockets():
    port = _port_left_in_time_wait()
    with socket.socket() as plain, pytest.raises(OSError):  # the old check's bind: refused for up to a minute
        plain.bind(("127.0.0.1", port))
    refuse_taken("127.0.0.1", port, "s3")  # the check passes: nobody listens there


def test_the_port_check_refuses_a_port_someone_listens_on():
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # even a listener that allows reuse
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {port} on 127.0.0.1 \\(s3\\) is in use by another program"):
            refuse_taken("127.0.0.1", port, "s3")
