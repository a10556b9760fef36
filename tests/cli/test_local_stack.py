"""The local stack's own checks and lifecycle (cli/nanolens_cli/stack.py)."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from nanolens_cli.stack import EmbeddedStore, Stack, free_port, refuse_taken


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


def test_the_store_makes_its_credentials_once_and_keeps_them(tmp_path):
    first = EmbeddedStore(tmp_path, "127.0.0.1", free_port())
    first.command()  # what a start does: its ports chosen and kept
    identities = tmp_path / "identities.json"
    assert first.access_key.startswith("nanolens-") and len(first.secret_key) >= 30
    assert stat.S_IMODE(identities.stat().st_mode) == 0o600  # the secret is its owner's alone
    (tmp_path / "1.dat").write_bytes(b"volume")  # as SeaweedFS leaves its objects (and master/, made above)
    first.wipe()  # nanolens up --fresh
    assert sorted(p.name for p in tmp_path.iterdir()) == ["identities.json", "ports.json"]
    again = EmbeddedStore(tmp_path, "127.0.0.1", free_port())
    again.command()
    assert (again.access_key, again.secret_key) == (first.access_key, first.secret_key)
    assert again.ports == first.ports  # its cluster state stays where it was
    other = EmbeddedStore(tmp_path / "elsewhere", "127.0.0.1", free_port())
    assert other.secret_key != first.secret_key


def test_a_second_stack_on_a_data_folder_in_use_is_refused(tmp_path):
    with Stack(domains=("spectra",), data_dir=tmp_path) as endpoints:
        assert endpoints.s3_access_key
        ports = (tmp_path / "s3" / "ports.json").read_text()
        second = Stack(domains=("spectra",), data_dir=tmp_path)
        with pytest.raises(RuntimeError, match=f"the data folder {tmp_path} is in use by another NanoLens stack "
                                               f"\\(process {os.getpid()}\\)"):
            second.start()
        assert not second.processes  # nothing of it was started
        assert (tmp_path / "s3" / "ports.json").read_text() == ports  # nor the running one's state touched
