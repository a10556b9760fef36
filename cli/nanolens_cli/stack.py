"""The local stack on loopback: an S3 server, the domain services and the gateway, as processes.

Production runs MinIO; here moto's S3 server speaks the same API (DESIGN.md). Each
process is started with its settings in the environment, and the stack waits for
the line a NanoLens process prints once it is SERVING (models warm).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

# Credentials of the throw-away local S3 server; a real install reads them from a Secret.
LOCAL_ACCESS_KEY = "nanolens-local"
LOCAL_SECRET_KEY = "nanolens-local-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@dataclass
class Process:
    name: str
    popen: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    serving: threading.Event = field(default_factory=threading.Event)

    def pump(self, echo: bool) -> None:
        """Read the process's output (so its pipe never fills) and spot the SERVING line."""
        for line in self.popen.stdout:
            self.lines.append(line)
            if line.startswith("NANOLENS_SERVING"):
                self.serving.set()
            if echo:
                sys.stderr.write(f"[{self.name}] {line}")
        self.popen.wait()  # EOF: the process is ending; reap it first so that waiters see its returncode
        self.serving.set()  # (they check it: a dead process's EOF used to pass for SERVING, its port taken or not)


@dataclass
class Endpoints:
    s3: str
    spectra: str
    tem: str
    gateway: str
    metrics: dict[str, str]

    def client_env(self) -> dict[str, str]:
        return {"NANOLENS_GATEWAY": self.gateway, "NANOLENS_S3_ENDPOINT": self.s3,
                "NANOLENS_S3_ACCESS_KEY": LOCAL_ACCESS_KEY, "NANOLENS_S3_SECRET_KEY": LOCAL_SECRET_KEY}


class Stack:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager)."""

    SERVICES = ("spectra", "tem", "gateway")  # started in this order; the gateway last

    def __init__(self, host: str = "127.0.0.1", s3_port: int = 0, spectra_port: int = 0, gateway_port: int = 0,
                 tem_port: int = 0, echo_logs: bool = False, extra_env: dict[str, str] | None = None,
                 log_dir: Path | None = None):
        self.host = host
        self.ports = {"s3": s3_port or free_port(), "spectra": spectra_port or free_port(),
                      "tem": tem_port or free_port(), "gateway": gateway_port or free_port()}
        self.metrics_ports = {name: free_port() for name in self.SERVICES}
        self.echo_logs = echo_logs
        self.extra_env = extra_env or {}
        self.log_dir = log_dir
        self.processes: list[Process] = []

    @property
    def endpoints(self) -> Endpoints:
        h = self.host
        return Endpoints(s3=f"{h}:{self.ports['s3']}", spectra=f"{h}:{self.ports['spectra']}",
                         tem=f"{h}:{self.ports['tem']}", gateway=f"{h}:{self.ports['gateway']}",
                         metrics={k: f"http://{h}:{p}/metrics" for k, p in self.metrics_ports.items()})

    def _env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "NANOLENS_GRPC_HOST": self.host, "NANOLENS_GRPC_PORT": str(self.ports[service]),
            "NANOLENS_METRICS_PORT": str(self.metrics_ports[service]),
            "NANOLENS_S3_ENDPOINT": self.endpoints.s3,
            "NANOLENS_S3_ACCESS_KEY": LOCAL_ACCESS_KEY, "NANOLENS_S3_SECRET_KEY": LOCAL_SECRET_KEY,
            "NANOLENS_SPECTRA_ADDR": self.endpoints.spectra, "NANOLENS_TEM_ADDR": self.endpoints.tem,
            "NANOLENS_GRACE_SECONDS": "5",
            "NANOLENS_DRAIN_DELAY_SECONDS": "0.5",
            "NANOLENS_LOG_FORMAT": env.get("NANOLENS_LOG_FORMAT", "json"),
            "PYTHONUNBUFFERED": "1",
        })
        # One BLAS thread per pool thread; numpy's default oversubscribes a small machine badly.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        popen = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        proc = Process(name, popen)
        threading.Thread(target=proc.pump, args=(self.echo_logs,), daemon=True).start()
        self.processes.append(proc)
        return proc

    def spawn_service(self, name: str) -> Process:
        """Start one NanoLens process (``spectra``, ``tem`` or ``gateway``) with this stack's settings."""
        return self._spawn(name, [sys.executable, "-m", f"nanolens_{name}"], self._env(name))

    def start(self, timeout: float = 90.0) -> Endpoints:
        try:
            s3 = self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", self.host, "-p",
                                    str(self.ports["s3"])], dict(os.environ))
            wait_for_port(self.ports["s3"], timeout, s3.popen)
            # The domain services load their models side by side; the gateway starts once they serve.
            services = {name: self.spawn_service(name) for name in self.SERVICES[:-1]}
            services["gateway"] = None
            for name in self.SERVICES:
                proc = services[name] or self.spawn_service(name)
                if not proc.serving.wait(timeout) or proc.popen.poll() is not None:
                    raise RuntimeError(f"{name} did not become ready:\n{''.join(proc.lines[-30:])}")
        except BaseException:
            self.stop()
            raise
        return self.endpoints

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM in reverse order (gateway first, storage last), then SIGKILL what lingers."""
        for proc in reversed(self.processes):
            if proc.popen.poll() is None:
                proc.popen.send_signal(signal.SIGTERM)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.popen.pid, signal.SIGKILL)
                proc.popen.wait()
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            for proc in self.processes:
                (self.log_dir / f"{proc.name}.log").write_text("".join(proc.lines))
        self.processes.clear()

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
