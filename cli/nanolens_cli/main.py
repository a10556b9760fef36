"""``nanolens``: run the local stack, analyse files through the gateway, train and list models.

Each group of commands lives in its own module (``analyze``, ``models``, ``spectra``, ``sem``,
``jobs``, ``results``, ``tokens``), which adds its parsers here and imports nothing of this one;
the commands that call the gateway go through ``nanolens_client``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from nanolens_client import GatewayError
from nanolens_runtime.errors import NanoLensError


def cmd_up(args) -> int:
    from nanolens_cli.stack import Stack, default_data_dir

    ports = {name.removesuffix("_port"): value for name, value in vars(args).items() if name.endswith("_port")}
    stack = Stack(host=args.host, ports=ports, echo_logs=args.logs, data_dir=args.data_dir or default_data_dir(),
                  fresh=args.fresh)
    stopped = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
        signal.signal(sig, lambda *_: stopped.set())
    print(f"starting the object store (SeaweedFS), {', '.join(stack.services[:-1])} services, gateway ...",
          file=sys.stderr)
    try:
        endpoints = stack.start()
    except (RuntimeError, TimeoutError) as exc:  # a process that did not start; its log is in the message
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(f"{'data':<8} {stack.data_dir}{' (emptied)' if args.fresh else ''}")
        print(f"{'s3':<8} {endpoints.s3}")
        for name, address in endpoints.services.items():
            print(f"{name:<8} {address}")
        print(f"{'gateway':<8} {endpoints.gateway}")
        for name, url in endpoints.metrics.items():
            print(f"metrics  {name} {url}")
        print("stack ready (Ctrl-C stops it); clients use:", flush=True)
        for key, value in endpoints.client_env().items():
            print(f"  export {key}={value}", flush=True)
        stopped.wait()
    except OSError:  # stdout went away (a pipe whose reader died): stop all the same
        pass
    finally:
        print("stopping ...", file=sys.stderr)
        stack.stop()
    print("stopped", file=sys.stderr)
    return 0


def all_settings() -> list[tuple[str, list[tuple[str, object, str]]]]:
    """(group, [(variable, default, description)]) for every process's settings."""
    from nanolens_client import ClientSettings
    from nanolens_gateway.domains import address_settings
    from nanolens_gateway.settings import GatewaySettings
    from nanolens_runtime.settings import InferenceSettings, ServerSettings, StorageSettings, describe
    from nanolens_runtime.tls import TlsSettings, UpstreamTlsSettings

    return [("clients: nanolens_client and the nanolens command", describe(ClientSettings)),
            ("every process", describe(ServerSettings)), ("every process: TLS", describe(TlsSettings)),
            ("object storage", describe(StorageSettings)),
            ("domain services: inference", describe(InferenceSettings)),
            ("gateway", describe(GatewaySettings) + address_settings()),
            ("gateway: TLS to the domain services", describe(UpstreamTlsSettings))]


def cmd_settings(args) -> int:
    for group, rows in all_settings():
        print(f"# {group}")
        for env, default, doc in rows:
            print(f"{env:<34} {default!s:<18} {doc}")
    return 0


def cmd_demo(args) -> int:
    from nanolens_cli.demo import run_demo

    return run_demo(Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    from nanolens_gateway.domains import domains as all_domains

    parser = argparse.ArgumentParser(prog="nanolens", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run the object store, services and gateway on loopback until Ctrl-C")
    up.add_argument("--host", default="127.0.0.1")
    up.add_argument("--gateway-port", type=int, default=50050)
    for i, domain in enumerate(all_domains()):
        up.add_argument(f"--{domain.name}-port", type=int, default=50051 + i, help=f"{domain.name} service port")
    up.add_argument("--s3-port", type=int, default=9000)
    up.add_argument("--data-dir", type=Path, help="the folder that keeps every object and the job database "
                    "(default: $XDG_DATA_HOME/nanolens, else ~/.local/share/nanolens)")
    up.add_argument("--fresh", action="store_true", help="empty the data folder first (its credentials stay)")
    up.add_argument("--logs", action="store_true", help="echo the processes' logs")
    up.set_defaults(func=cmd_up)

    from nanolens_cli import analyze, jobs, models, results, sem, spectra, tokens

    analyze.add_parsers(sub)
    models.add_parsers(sub)
    spectra.add_parsers(sub)
    sem.add_parsers(sub)
    tokens.add_parser(sub)
    jobs.add_parsers(sub)
    results.add_parser(sub)

    settings = sub.add_parser("settings", help="every NANOLENS_* setting of every process, with its default")
    settings.set_defaults(func=cmd_settings)

    demo = sub.add_parser("demo", help="the main job: stack on loopback, sample data, analyses, pictures")
    demo.add_argument("--out", default="demo-output")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GatewayError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError, NanoLensError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
