"""The gateway under load and faults (issue 35), on one stack in one run:

- health-check latency (p50/p99, a probe every 50 ms on its own connection) and ``Analyze``
  throughput while 1, 8 and 32 clients force analyses of a 64-spectrum file (each draws a plot);
- the gateway's resident peak above its resting memory for each decompression bomb of
  ``bench.bombs`` (each refused);
- the time from a domain service's return after an outage to the completion of the job the
  outage interrupted.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench import bombs
from nanolens.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from nanolens_cli.stack import Stack
from nanolens_client import Client

CLIENTS = (1, 8, 32)
SPECTRUM_ROWS = 64


def _spectra_file(path: Path, offset: int, rows_: int = SPECTRUM_ROWS) -> Path:
    axis = [100 + 3 * j for j in range(960)]
    rows = [",".join(str(1000 + (j % 11) * 7 + offset + i) for j in range(960)) for i in range(rows_)]
    path.write_text(",".join(map(str, axis)) + "\n" + "\n".join(rows) + "\n")
    return path


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _under_load(address: str, ref, clients: int, seconds: float) -> dict:
    stop = threading.Event()
    done, failed, codes = [0] * clients, [0] * clients, set()

    def analyse(i: int) -> None:
        channel = grpc.insecure_channel(address)
        stub = gateway_pb2_grpc.GatewayStub(channel)
        request = gateway_pb2.AnalyzeRequest(input=ref, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA, force=True)
        while not stop.is_set():
            try:
                stub.Analyze(request, timeout=120)
                done[i] += 1
            except grpc.RpcError as exc:
                failed[i] += 1
                codes.add(f"{exc.code().name}: {exc.details()[:80]}")
        channel.close()

    workers = [threading.Thread(target=analyse, args=(i,)) for i in range(clients)]
    for w in workers:
        w.start()
    # The same probe in a process of its own, as a kubelet probes: it does not share this process's
    # interpreter lock with the clients' threads.
    spawn = multiprocessing.get_context("spawn")
    apart = spawn.Queue()
    prober = spawn.Process(target=_probe_apart, args=(address, seconds, apart))
    prober.start()
    start = time.perf_counter()
    latencies = _probe(address, seconds)
    separate = apart.get(timeout=120)  # it started later: the clients go on until it has ended too
    prober.join()
    stop.set()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "probes": len(latencies), "health_p50_ms": 1000 * statistics.median(latencies),
            "health_p99_ms": 1000 * _percentile(latencies, 0.99), "health_max_ms": 1000 * max(latencies),
            "apart_probes": len(separate), "apart_p50_ms": 1000 * statistics.median(separate),
            "apart_p99_ms": 1000 * _percentile(separate, 0.99), "apart_max_ms": 1000 * max(separate),
            "load_average": os.getloadavg()[0],
            "analyses": sum(done), "failed": sum(failed), "failures": sorted(codes),
            "analyses_per_s": sum(done) / elapsed}


def _probe(address: str, seconds: float) -> list[float]:
    """A health check every 50 ms on a connection of its own for ``seconds``; their latencies."""
    channel = grpc.insecure_channel(address)
    health = health_pb2_grpc.HealthStub(channel)
    health.Check(health_pb2.HealthCheckRequest(), timeout=30)  # connected before timing
    latencies = []
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        health.Check(health_pb2.HealthCheckRequest(), timeout=30)
        latencies.append(time.perf_counter() - t)
        time.sleep(0.05)
    channel.close()
    return latencies


def _probe_apart(address: str, seconds: float, out) -> None:
    out.put(_probe(address, seconds))


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


BOMBS = [
    ("rgb-13000.png", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.png(13000, 13000)),
    ("declares-100000.png", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.png(100000, 100000, rows=1)),
    ("zlib-20000.tif", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.tiff(20000, 20000)),
    ("declares-100000.npy", gateway_pb2.ANALYSIS_KIND_PARTICLE_SIZES, lambda: bombs.npy_declaring((100000, 100000))),
    ("spectra-1.75GiB.npz", gateway_pb2.ANALYSIS_KIND_SPECTRA, lambda: bombs.npz(int(1.75 * 2**30))),
]


def _upload(client: Client, path: Path, key: str):
    return client.upload(path, key=key, timeout=120).object.proto()


def _bombs(client: Client, pid: int, folder: Path) -> list[dict]:
    out = []
    for name, analysis, make in BOMBS:
        path = folder / name
        path.write_bytes(make())
        ref = _upload(client, path, f"bench/bombs/{name}")
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        before = _status_kib(pid, "VmRSS")
        try:
            client.stub.Analyze(gateway_pb2.AnalyzeRequest(input=ref, analysis=analysis), timeout=120)
            code = "OK"
        except grpc.RpcError as exc:
            code = exc.code().name
        out.append({"bomb": name, "file_bytes": path.stat().st_size, "code": code,
                    "peak_above_resting_mib": (_status_kib(pid, "VmHWM") - before) / 1024})
    return out


def _outage(running: Stack, client: Client, folder: Path, items: int, away_s: float) -> dict:
    for i in range(items):
        _upload(client, _spectra_file(folder / f"outage-{i}.csv", 50_000 + i, 1), f"bench/outage/{i}.csv")
    job = client.stub.SubmitJob(gateway_pb2.SubmitJobRequest(prefix="bench/outage/",
                                                             analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA),
                                timeout=60).job
    while client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=30).job.done < 1:
        time.sleep(0.05)
    (service,) = [p for p in running.processes if p.name == "spectra"]
    service.popen.kill()
    service.popen.wait()
    running.processes.remove(service)
    time.sleep(away_s)
    restarted = running.spawn_service("spectra")
    restarted.serving.wait(120)
    back = time.perf_counter()
    done_before, first = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=30).job.done, None
    while True:
        state = client.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id), timeout=30).job
        if first is None and state.done > done_before:
            first = time.perf_counter() - back
        if state.state in ("done", "failed", "cancelled"):
            break
        time.sleep(0.05)
    return {"items": items, "away_s": away_s, "job_state": state.state, "done": state.done, "failed": state.failed,
            "done_before_return": done_before, "return_to_first_done_s": first,
            "return_to_done_s": time.perf_counter() - back}


def run(quick: bool = False) -> dict:
    seconds, away_s, items = (5.0, 10.0, 6) if quick else (20.0, 120.0, 24)
    running = Stack(domains=("spectra", "tem"), extra_env={"NANOLENS_JOB_CONCURRENCY": "1"})
    endpoints = running.start()
    try:
        client = Client(endpoints.gateway)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            ref = _upload(client, _spectra_file(folder / "load.csv", 0), "bench/load.csv")
            client.stub.Analyze(gateway_pb2.AnalyzeRequest(input=ref, analysis=gateway_pb2.ANALYSIS_KIND_SPECTRA),
                                timeout=120)  # warm: models resolved
            load = [_under_load(endpoints.gateway, ref, n, seconds) for n in CLIENTS]
            (gateway,) = [p for p in running.processes if p.name == "gateway"]
            peaks = _bombs(client, gateway.popen.pid, folder)
            outage = _outage(running, client, folder, items, away_s)
        client.close()
    finally:
        running.stop()
    return {"load_seconds": seconds, "load": load, "bombs": peaks, "outage": outage}


def report(r: dict) -> str:
    lines = [f"gateway under load: {SPECTRUM_ROWS}-spectrum files analysed with force (a plot each), "
             "health probed every 50 ms"]
    for row in r["load"]:
        lines.append(f"  {row['clients']:>2} clients  health p50 {row['health_p50_ms']:.1f} ms  p99 "
                     f"{row['health_p99_ms']:.1f} ms  (max {row['health_max_ms']:.0f} ms, {row['probes']} probes; "
                     f"goal p99 < 100 ms)  Analyze {row['analyses_per_s']:.2f}/s ({row['failed']} failed)  "
                     f"load average {row['load_average']:.1f}")
        lines.append(f"             probe in its own process: p50 {row['apart_p50_ms']:.1f} ms  p99 "
                     f"{row['apart_p99_ms']:.1f} ms  (max {row['apart_max_ms']:.0f} ms, {row['apart_probes']} probes)")
        lines += [f"     {failure}" for failure in row["failures"]]
    lines.append("decompression bombs (each refused; goal: < 100 MiB above resting)")
    for row in r["bombs"]:
        lines.append(f"  {row['bomb']:<22} {row['file_bytes'] / 1024:>7.0f} KiB  {row['code']:<18} "
                     f"peak +{row['peak_above_resting_mib']:.1f} MiB")
    o = r["outage"]
    lines.append(f"outage: spectra service away {o['away_s']:.0f} s mid-job ({o['items']} single spectra, "
                 f"{o['done_before_return']} done before): job {o['job_state']} ({o['done']} done, {o['failed']} "
                 f"failed); after the service was back, the next item done in {o['return_to_first_done_s']:.1f} s, "
                 f"the job in {o['return_to_done_s']:.1f} s")
    return "\n".join(lines)
