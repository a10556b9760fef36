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
import tempfile
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
    gateway: str
    services: dict[str, str]  # domain name -> host:port
    metrics: dict[str, str]

    def __getattr__(self, name: str) -> str:  # endpoints.spectra, endpoints.tem, ...
        services = self.__dict__.get("services", {})
        if name in services:
            return services[name]
        raise AttributeError(name)

    def client_env(self) -> dict[str, str]:
        return {"NANOLENS_GATEWAY": self.gateway, "NANOLENS_S3_ENDPOINT": self.s3,
                "NANOLENS_S3_ACCESS_KEY": LOCAL_ACCESS_KEY, "NANOLENS_S3_SECRET_KEY": LOCAL_SECRET_KEY}


# Run first in each child, then exec'd into the real program: the kernel sends SIGTERM when the
# stack's process dies, however it dies (Ctrl-C through a pipe, SIGKILL), so no child outlives it.
# The setting survives exec; set in the child itself rather than by preexec_fn, which is unsafe
# beside the stack's reader threads. On a system without prctl, stop() is what remains.
_DIE_WITH_PARENT = """
import ctypes, os, signal, sys
parent = int(sys.argv[1])
try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:  # the parent died before prctl took effect
    sys.exit(1)
os.execv(sys.argv[2], sys.argv[2:])
"""


def refuse_taken(host: str, port: int, what: str) -> None:
    """A port someone else listens on is one clear line, before anything starts: the stack never
    attaches to a server it did not start (another program's S3 on 9000 looked like ours).

    The probe sets SO_REUSEADDR as the servers do, so the previous run's connections in TIME_WAIT
    (dozens for a minute after a stop) do not count: only a listener, or a socket bound without
    SO_REUSEADDR, makes the bind fail."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise RuntimeError(f"port {port} on {host} ({what}) is in use by another program ({exc.strerror}); "
                               f"stop it or choose another port") from None


class Stack:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager).

    Runs one process per registered domain (``nanolens_gateway.domains``), or only those named
    in ``domains``, then the gateway. ``ports`` fixes ports by name (``s3``, ``gateway``, a
    domain's name); the rest are free ports.
    """

    def __init__(self, host: str = "127.0.0.1", ports: dict[str, int] | None = None, echo_logs: bool = False,
                 extra_env: dict[str, str] | None = None, log_dir: Path | None = None,
                 domains: tuple[str, ...] | None = None):
        from nanolens_gateway.domains import domains as registered

        self.host = host
        self.domains = [d for d in registered() if domains is None or d.name in domains]
        self.services = [d.name for d in self.domains] + ["gateway"]  # started in this order; the gateway last
        ports = {k: v for k, v in (ports or {}).items() if v}
        self.ports = {name: ports.get(name) or free_port() for name in ["s3", *self.services]}
        self.metrics_ports = {name: free_port() for name in self.services}
        self.echo_logs = echo_logs
        self.extra_env = extra_env or {}
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self._jobs_dir = tempfile.TemporaryDirectory(prefix="nanolens-jobs-")
        self.jobs_db = Path(self._jobs_dir.name) / "jobs.sqlite"

    @property
    def endpoints(self) -> Endpoints:
        h = self.host
        return Endpoints(s3=f"{h}:{self.ports['s3']}", gateway=f"{h}:{self.ports['gateway']}",
                         services={d.name: f"{h}:{self.ports[d.name]}" for d in self.domains},
                         metrics={k: f"http://{h}:{p}/metrics" for k, p in self.metrics_ports.items()})

    def _env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "NANOLENS_GRPC_HOST": self.host, "NANOLENS_GRPC_PORT": str(self.ports[service]),
            "NANOLENS_METRICS_HOST": self.host, "NANOLENS_METRICS_PORT": str(self.metrics_ports[service]),
            "NANOLENS_S3_ENDPOINT": self.endpoints.s3,
            "NANOLENS_S3_ACCESS_KEY": LOCAL_ACCESS_KEY, "NANOLENS_S3_SECRET_KEY": LOCAL_SECRET_KEY,
            "NANOLENS_GRACE_SECONDS": "5",
            "NANOLENS_DRAIN_DELAY_SECONDS": "0.5",
            "NANOLENS_LOG_FORMAT": env.get("NANOLENS_LOG_FORMAT", "json"),
            "PYTHONUNBUFFERED": "1",
        })
        if service == "gateway":  # durable jobs in a database beside the stack's logs (or a temporary folder)
            env["NANOLENS_JOBS_DB"] = str(self.jobs_db)
        for domain in self.domains:  # the gateway reaches every domain the stack runs, and no other
            env[domain.addr_setting] = self.endpoints.services[domain.name]
        # One BLAS thread per pool thread; numpy's default oversubscribes a small machine badly.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Process:
        argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
        popen = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 start_new_session=True)
        proc = Process(name, popen)
        threading.Thread(target=proc.pump, args=(self.echo_logs,), daemon=True).start()
        self.processes.append(proc)
        return proc

    def spawn_service(self, name: str) -> Process:
        """Start one NanoLens process (a domain's service, or ``gateway``) with this stack's settings."""
        module = next((d.module for d in self.domains if d.name == name), f"nanolens_{name}")
        return self._spawn(name, [sys.executable, "-m", module], self._env(name))

    def start(self, timeout: float = 90.0) -> Endpoints:
        for name, port in self.ports.items():
            refuse_taken(self.host, port, name)
        for name, port in self.metrics_ports.items():
            refuse_taken(self.host, port, f"{name} metrics")
        try:
            s3 = self._spawn("s3", [sys.executable, "-m", "moto.server", "-H", self.host, "-p",
                                    str(self.ports["s3"])], dict(os.environ))
            wait_for_port(self.ports["s3"], timeout, s3.popen)
            # The domain services load their models side by side; the gateway starts once they serve.
            started = {name: self.spawn_service(name) for name in self.services[:-1]}
            for name in self.services:
                proc = started.get(name) or self.spawn_service(name)
                if not proc.serving.wait(timeout) or proc.popen.poll() is not None:
                    raise RuntimeError(f"{name} did not become ready:\n{''.join(proc.lines[-30:])}")
            if s3.popen.poll() is not None:
                raise RuntimeError(f"the S3 server exited with {s3.popen.returncode}:\n{''.join(s3.lines[-30:])}")
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
