"""``python -m nanolens_gateway``: the gateway (settings from NANOLENS_* variables)."""

import asyncio
import logging
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from nanolens_gateway.auth import GatewayAuth, parse_tokens
from nanolens_gateway.automation.events import EventIntake, EventServer, parse_rules, scan_forever
from nanolens_gateway.automation.report import ReportWriter
from nanolens_gateway.code_identity import adapter_sha256
from nanolens_gateway.domains import analyses, domains
from nanolens_gateway.jobs.rpc import JobRpcs
from nanolens_gateway.jobs.store import open_store
from nanolens_gateway.jobs.worker import JobRunner
from nanolens_gateway.server import GatewayServicer, servicer
from nanolens_gateway.settings import GatewaySettings
from nanolens_runtime.server import serve
from nanolens_runtime.settings import ServerSettings, StorageSettings, from_env
from nanolens_runtime.storage import ObjectStore
from nanolens_runtime.tls import UpstreamTlsSettings
from nanolens_runtime.version import SERVICE_VERSION

tasks: set[asyncio.Task] = set()  # the job runner, kept referenced while the process runs


def start_jobs(impl: GatewayServicer, gateway: GatewaySettings, clients: dict) -> JobRunner:
    """The job store, the job RPCs on the servicer and the runner that works through the items."""
    store = open_store(gateway.jobs_db)  # a SQLite file, or a postgresql:// URL shared by replicas

    async def healthy(name: str) -> bool:
        if name not in clients:
            return False
        try:
            answer = await health_pb2_grpc.HealthStub(clients[name].channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5)
        except grpc.aio.AioRpcError:
            return False
        return answer.status == health_pb2.HealthCheckResponse.SERVING

    runner = JobRunner(store, impl.plane.analyse,
                       {kind: domain.name for kind, (domain, _) in analyses().items()},
                       per_service=gateway.job_concurrency, lease_seconds=gateway.job_lease_seconds,
                       max_crashes=gateway.job_max_crashes, outage_seconds=gateway.job_outage_seconds,
                       backoff_max_seconds=gateway.job_backoff_max_seconds, item_seconds=gateway.job_item_seconds,
                       healthy=healthy)
    impl.jobs = JobRpcs(impl.plane, store, gateway.job_max_items, wake=runner.wake.set)
    return runner


async def start_events(gateway: GatewaySettings, host: str, runner: JobRunner, objects: ObjectStore) -> None:
    """The bucket-event webhook and the reconciliation scan, enqueuing into the job store."""
    # a missing or broken rules file stops the start, naming what is wrong
    rules = parse_rules(await asyncio.to_thread(Path(gateway.event_rules).read_text, "utf-8"), gateway.event_rules)
    intake = EventIntake(runner.store, rules, wake=runner.wake.set)
    events = EventServer(intake, gateway.events_token, objects)
    tasks.add(await asyncio.start_server(events.handle, host.strip("[]") or None, gateway.events_port))
    if gateway.events_scan_seconds > 0:
        tasks.add(asyncio.get_running_loop().create_task(scan_forever(intake, objects, gateway.events_scan_seconds)))
    logging.getLogger("nanolens.events").info("bucket events", extra={"port": gateway.events_port, "rules": len(rules)})


def main() -> None:
    server = from_env(ServerSettings)
    gateway = from_env(GatewaySettings)
    storage = from_env(StorageSettings)

    async def build():
        # one client per registered domain that has an address (NANOLENS_<DOMAIN>_ADDR)
        upstream = from_env(UpstreamTlsSettings).channel_credentials()  # None: plaintext to the services
        clients = {d.name: d.client(d.address(), server.max_message_mb, upstream) for d in domains() if d.address()}
        impl = GatewayServicer(gateway, ObjectStore.from_settings(storage), clients)

        runner = start_jobs(impl, gateway, clients) if gateway.jobs_db else None

        async def warm_up():
            if not tokens:
                logging.getLogger("nanolens.auth").warning(
                    "NANOLENS_GATEWAY_TOKENS is empty: the gateway accepts unauthenticated calls")
            await asyncio.to_thread(impl.ensure_buckets)
            # Every result's identity hashes its adapter's code (parsing its modules, and running the
            # programs they name): before serving, in a thread, not on the event loop at a first analysis.
            await asyncio.to_thread(lambda: [adapter_sha256(d.adapter) for d in domains() if d.name in clients])
            if runner is not None:
                tasks.add(asyncio.get_running_loop().create_task(runner.run()))
            if runner is not None and gateway.job_report_seconds > 0:
                reports = ReportWriter(runner.store, impl.store, gateway.results_bucket)
                tasks.add(asyncio.get_running_loop().create_task(reports.run(gateway.job_report_seconds)))
            if runner is not None and gateway.events_port:
                await start_events(gateway, server.host, runner, impl.store)

        return [servicer(impl)], warm_up

    tokens = parse_tokens(gateway.tokens)  # a broken table stops the start, naming the entry
    auth = GatewayAuth(tokens, gateway.results_bucket)  # always: it also writes the audit line of every call
    asyncio.run(serve("gateway", SERVICE_VERSION, "none", server, build, extra_interceptors=[auth]))


if __name__ == "__main__":
    main()
